"""The OpenAI-compatible chat API on a real ``aiforge serve`` process on loopback, driven by the official
``openai`` client (non-streaming and streaming) and by raw HTTP for the guardrails."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from chat_helpers import Acme

from aiforge.tasks.chat.api import load_chat
from serve_helpers import RunningServer, serving
from wrong_kind import KindRoute, check_wrong_kind, routes_for_other_kinds

pytestmark = pytest.mark.usefixtures("chat_env")

KEY = "test-key-0123456789"


@pytest.fixture(scope="module")
def server(acme: Acme, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("chat-server")
    keys = folder / "keys.txt"
    keys.write_text(f"# test key\n{KEY}\n", encoding="utf-8")
    with serving(acme.path, acme.home, folder / "server.log", extra=["--api-key-file", str(keys)]) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60, headers={"Authorization": f"Bearer {KEY}"}) as c:
        yield c


def error_of(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    return str(body["error"])


def test_openai_client_lists_models_and_chats(client: openai.OpenAI, acme: Acme) -> None:
    assert acme.name in [m.id for m in client.models.list()]
    reply = client.chat.completions.create(
        model=acme.name, messages=[{"role": "user", "content": "How do I reset my password?"}])
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.role == "assistant"
    assert "Reset password" in (reply.choices[0].message.content or "")
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    extra = reply.model_extra or {}
    assert extra["citations"][0]["source"] == "docs/guide.md"
    assert extra["aiforge"]["kind"] == "retrieval"


def test_openai_client_streams_chunks_and_citations(client: openai.OpenAI, acme: Acme) -> None:
    messages = [{"role": "user", "content": "When are refunds issued?"}]
    full = client.chat.completions.create(model=acme.name, messages=messages)  # type: ignore[arg-type]
    stream = client.chat.completions.create(model=acme.name, messages=messages, stream=True)  # type: ignore[arg-type]
    chunks = list(stream)
    assert len(chunks) > 3, "the answer should arrive in several deltas"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == full.choices[0].message.content
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert (last.model_extra or {})["citations"][0]["source"] == "docs/billing.html"


def test_raw_sse_ends_with_done(http: httpx.Client, acme: Acme) -> None:
    body = {"model": acme.name, "stream": True,
            "messages": [{"role": "user", "content": "What are the support hours?"}]}
    with http.stream("POST", "/v1/chat/completions", json=body) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = [line for line in resp.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    payloads = [json.loads(e[6:]) for e in events[:-1]]
    assert "Monday to Friday" in "".join(p["choices"][0]["delta"].get("content", "") for p in payloads)


def test_embeddings_match_the_runtime(client: openai.OpenAI, http: httpx.Client, acme: Acme) -> None:
    texts = ["refund policy", "reset my password"]
    ref = load_chat(acme.path).embed(texts)
    got = client.embeddings.create(model=acme.name, input=texts)  # the client asks for base64 by default
    vecs = np.array([d.embedding for d in got.data], dtype=np.float32)
    np.testing.assert_allclose(vecs, ref, atol=1e-5)
    plain = http.post("/v1/embeddings", json={"model": acme.name, "input": "refund policy", "encoding_format": "float"})
    assert plain.status_code == 200
    np.testing.assert_allclose(np.array(plain.json()["data"][0]["embedding"]), ref[0], atol=1e-5)


@pytest.mark.parametrize(("body", "status", "needle"), [
    ({"messages": [{"role": "user", "content": "hi"}] * 9}, 422, "over the limit of 8"),
    ({"messages": [{"role": "user", "content": "x" * 501}]}, 422, "501 characters"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 65}, 422, "max_tokens"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, 422, "max_tokens"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, 422, "role"),
    ({"messages": []}, 422, "messages"),
    ({"messages": [{"role": "user", "content": "hi"}], "n": 2}, 422, "n"),
    ({"messages": [{"role": "user", "content": "hi"}], "session_id": "../../etc"}, 422, "session_id"),
    ({"messages": [{"role": "user", "content": "hi"}], "retrieval": False}, 422, "extractive"),
    ({"model": "nope", "messages": [{"role": "user", "content": "hi"}]}, 404, "not found"),
])
def test_guardrails_answer_4xx_with_json(http: httpx.Client, acme: Acme, body: dict[str, object], status: int,
                                         needle: str) -> None:
    resp = http.post("/v1/chat/completions", json={"model": acme.name, **body})
    assert resp.status_code == status, resp.text
    assert needle in error_of(resp)


@pytest.mark.parametrize("route", routes_for_other_kinds("chat"))
def test_other_kinds_routes_refuse_a_chat_model_with_the_same_400(http: httpx.Client, acme: Acme,
                                                                  route: KindRoute) -> None:
    check_wrong_kind(http, route, name=acme.name, served="chat")


def test_generic_predict_classifies_a_chat_bundles_intents(http: httpx.Client, acme: Acme) -> None:
    """A chat bundle with intents is a classifier to v1 /predict; a non-string input is a 422."""
    r = http.post(f"/v1/models/{acme.name}/predict", json={"inputs": ["hello", "list your sources"]})
    assert r.status_code == 200, r.text
    assert [p["label"] for p in r.json()["predictions"]] == ["greet", "sources"]
    r = http.post(f"/v1/models/{acme.name}/predict", json={"inputs": [3]})
    assert r.status_code == 422 and "inputs[0]: expected a string" in error_of(r)


def test_embedding_limits_and_api_key(server: RunningServer, http: httpx.Client, acme: Acme) -> None:
    resp = http.post("/v1/embeddings", json={"model": acme.name, "input": ["a"] * 5})
    assert resp.status_code == 422 and "over the limit of 4" in error_of(resp)
    resp = http.post("/v1/embeddings", json={"model": acme.name, "input": [[1, 2, 3]]})
    assert resp.status_code == 422
    anon = httpx.post(f"{server.url}/v1/chat/completions", timeout=30,
                      json={"model": acme.name, "messages": [{"role": "user", "content": "hi"}]})
    assert anon.status_code == 401 and "API key" in error_of(anon)
    bad = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_sessions_over_http_and_their_deletion(client: openai.OpenAI, http: httpx.Client, acme: Acme) -> None:
    sid = "http-session-1"
    first = client.chat.completions.create(model=acme.name, extra_body={"session_id": sid},
                                           messages=[{"role": "user", "content": "How much storage is free?"}])
    assert "15 GB" in (first.choices[0].message.content or "")
    follow = client.chat.completions.create(model=acme.name, extra_body={"session_id": sid},
                                            messages=[{"role": "user", "content": "And when I reach it?"}])
    assert (follow.model_extra or {})["aiforge"]["query"].startswith("How much storage is free?")
    stored = http.get(f"/v1/chat/sessions/{sid}")
    assert stored.status_code == 200 and len(stored.json()["messages"]) == 4
    assert http.delete(f"/v1/chat/sessions/{sid}").json() == {"id": sid, "deleted": True}
    assert http.get(f"/v1/chat/sessions/{sid}").status_code == 404
    assert http.delete(f"/v1/chat/sessions/{sid}").status_code == 404


def test_pii_is_redacted_from_the_server_log(server: RunningServer, http: httpx.Client, acme: Acme) -> None:
    secret = "My e-mail is jane.doe@example.com, card 4111 1111 1111 1111, phone +44 20 7946 0958. Refund?"
    resp = http.post("/v1/chat/completions", json={"model": acme.name,
                                                     "messages": [{"role": "user", "content": secret}]})
    assert resp.status_code == 200
    log = Path(server.log).read_text(encoding="utf-8", errors="replace")
    lines = [json.loads(line) for line in log.splitlines() if line.startswith('{"event": "chat"')]
    assert any("[email]" in entry["question"] and "[card]" in entry["question"] and "[phone]" in entry["question"]
               for entry in lines), log[-2000:]
    for raw in ("jane.doe@example.com", "4111 1111 1111 1111", "7946 0958", KEY):
        assert raw not in log


def test_chat_answers_in_flight_are_bounded(acme: Acme, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chat answers bypass the batcher, so the server bounds them itself: 503 + Retry-After over the limit."""
    import threading
    import time

    from fastapi.testclient import TestClient

    from aiforge.serve.app import create_app
    from aiforge.serve.config import ServerConfig

    rt = load_chat(acme.path)
    real = rt.respond

    def slow(*args: object, **kwargs: object) -> object:
        time.sleep(1.5)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(rt, "respond", slow)
    body = {"model": acme.name, "messages": [{"role": "user", "content": "When are refunds issued?"}]}
    with TestClient(create_app([rt], config=ServerConfig(chat_max_in_flight=1, access_log=False))) as tc:
        while tc.get("/v2/health/ready").status_code != 200:
            time.sleep(0.05)
        results: list[int] = []
        first = threading.Thread(target=lambda: results.append(tc.post("/v1/chat/completions", json=body).status_code))
        first.start()
        time.sleep(0.5)
        second = tc.post("/v1/chat/completions", json=body)
        first.join()
        assert second.status_code == 503 and second.headers["retry-after"] == "1"
        assert "limit" in error_of(second)
        assert results == [200]
        assert tc.post("/v1/chat/completions", json=body).status_code == 200  # the slot was given back
        streamed = tc.post("/v1/chat/completions", json={**body, "stream": True})
        assert streamed.status_code == 200 and streamed.text.rstrip().endswith("data: [DONE]")
        assert tc.post("/v1/chat/completions", json=body).status_code == 200  # ...and after a stream too

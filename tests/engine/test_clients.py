"""The clients people already use, unchanged, against one real server holding every kind on loopback:
tritonclient (binary and JSON tensors, compressed bodies, readiness by version, server metadata), the
official openai client (chat streamed and not, stop, max_tokens, response_format honoured by the server
and passed to an upstream, models, completions, embeddings and every refusal in OpenAI's error shape),
LangChain's ChatOpenAI and OpenAIEmbeddings, promtool on the
metrics, openapi-spec-validator on the schema with served answers checked against it, and af.Client.
"""

from __future__ import annotations

import base64
import csv
import gzip
import json
import shutil
import subprocess
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from aiforge.serve.client import Client
from aiforge.serve.errors import is_openai_path
from aiforge.serve.loadgen import aiforge_server_args, free_port, start_server
from serve_helpers import RunningServer, server_env, stop_server

QUESTION = "How do I reset my password?"


@dataclass
class Upstream:
    """An OpenAI-compatible upstream for the ``openai`` backend's bundle: it records each request body and
    streams, as its answer, the JSON object ``{"format": <response_format type or null>}`` in two pieces."""

    bodies: list[dict[str, Any]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_port}/v1"

    def start(self) -> Upstream:
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                bodies.append(body)
                answer = json.dumps({"format": (body.get("response_format") or {}).get("type")})
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for piece in (answer[:5], answer[5:]):
                    chunk = {"choices": [{"index": 0, "delta": {"content": piece}}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self


@dataclass(frozen=True)
class Served:
    server: RunningServer
    text: str
    tabular: str
    image: str
    recommend: str
    chat: str
    png: bytes
    records: list[dict[str, Any]]
    tokenizer: Path  # the chat bundle's tokenizer.json
    user: str  # a user the recommender knows
    relay: str  # a chat bundle whose backend is ``upstream``
    upstream: Upstream

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="module")
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           chat_cache: Path) -> Iterator[Served]:
    from chat_helpers import build_bundle, spec_dict
    from vision_helpers import trained_images

    text = request.getfixturevalue("trained_bundle")
    german = request.getfixturevalue("german")
    records = request.getfixturevalue("records")
    rec = request.getfixturevalue("rec_bundle")
    acme = request.getfixturevalue("acme")
    images = trained_images()
    png = next((images.data / "test" / "Bag").glob("*.png")).read_bytes()
    upstream = Upstream().start()
    root = tmp_path_factory.mktemp("relay")
    mp = pytest.MonkeyPatch()
    mp.setenv("AIFORGE_CACHE", str(chat_cache))
    try:
        relay = build_bundle(spec_dict(acme.docs, name="acme-relay", generation={
            "backend": "openai", "base_url": upstream.url, "model": "upstream-model", "timeout_s": 30}),
            root / "home", root / "spec")
    finally:
        mp.undo()
    bundles = [Path(text.export.path), german.path, Path(images.export.path), Path(rec.export.path), acme.path,
               relay.exported.path]
    home = tmp_path_factory.mktemp("clients-home")
    port = free_port()
    log = home / "server.log"
    proc, ready = start_server(aiforge_server_args([str(b) for b in bundles], port=port), port=port,
                               env=server_env(home), log=log, timeout=240)
    server = RunningServer(proc, port, ready, log)
    tokenizer = next(acme.path.rglob("*tokenizer.json"))
    try:
        with rec.ratings.open(encoding="utf-8") as f:
            user = next(csv.DictReader(f))["userId"]
        yield Served(server, text.name, german.export.record.name, images.export.record.name,
                     rec.export.record.name, acme.name, png, records, tokenizer, user,
                     relay.exported.record.name, upstream)
    finally:
        stop_server(server)
        assert upstream.server is not None
        upstream.server.shutdown()


# ----- tritonclient ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tc(served: Served) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(f"127.0.0.1:{served.server.port}", network_timeout=120)
    yield client
    client.close()


def _text_input(texts: list[str], *, binary: bool, name: str = "text") -> triton.InferInput:
    tensor = triton.InferInput(name, [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array(texts, dtype=np.object_), binary_data=binary)
    return tensor


def _v1_labels(served: Served, name: str, items: list[Any]) -> list[str]:
    r = httpx.post(f"{served.url}/v1/models/{name}/predict", json={"inputs": items}, timeout=60)
    assert r.status_code == 200, r.text
    return [p["label"] for p in r.json()["predictions"]]


def test_triton_server_metadata_and_readiness_by_version(served: Served, tc: triton.InferenceServerClient) -> None:
    assert tc.is_server_live() and tc.is_server_ready()
    meta = tc.get_server_metadata()
    assert meta["name"] == "aiforge"
    assert {"binary_tensor_data", "model_version_ready", "request_compression"} <= set(meta["extensions"])
    model = tc.get_model_metadata(served.text)
    [version] = model["versions"]
    assert tc.is_model_ready(served.text) and tc.is_model_ready(served.text, version)
    assert not tc.is_model_ready(served.text, version + "99") and not tc.is_model_ready("no-such-model", "1")


TEXTS = ["I lost my card", "how do I top up with apple pay", "my transfer has not arrived yet"]


@pytest.mark.parametrize("binary_in", [True, False], ids=["binary-in", "json-in"])
@pytest.mark.parametrize("binary_out", [True, False], ids=["binary-out", "json-out"])
def test_triton_text_tensors(served: Served, tc: triton.InferenceServerClient, binary_in: bool,
                             binary_out: bool) -> None:
    outputs = [triton.InferRequestedOutput(n, binary_data=binary_out) for n in ("label", "score", "probabilities")]
    result = tc.infer(served.text, [_text_input(TEXTS, binary=binary_in)], outputs=outputs)
    labels = [x.decode() if isinstance(x, bytes) else x for x in result.as_numpy("label").tolist()]
    assert labels == _v1_labels(served, served.text, TEXTS)
    probs = result.as_numpy("probabilities")
    assert probs.shape[0] == len(TEXTS) and np.allclose(probs.sum(axis=1), 1, atol=1e-2)
    assert np.allclose(result.as_numpy("score"), probs.max(axis=1), atol=1e-6)


def test_triton_default_outputs_are_binary(served: Served, tc: triton.InferenceServerClient) -> None:
    result = tc.infer(served.text, [_text_input(TEXTS, binary=True)])  # no outputs: binary_data_output
    response = result.get_response()
    assert all("binary_data_size" in o["parameters"] and "data" not in o for o in response["outputs"])
    assert [x.decode() for x in result.as_numpy("label").tolist()] == _v1_labels(served, served.text, TEXTS)


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_triton_compressed_requests(served: Served, tc: triton.InferenceServerClient, algorithm: str) -> None:
    result = tc.infer(served.text, [_text_input(TEXTS, binary=True)], request_compression_algorithm=algorithm)
    assert [x.decode() for x in result.as_numpy("label").tolist()] == _v1_labels(served, served.text, TEXTS)


def test_compressed_bomb_is_413_and_bad_encodings_are_refused(served: Served) -> None:
    url = f"{served.url}/v2/models/{served.text}/infer"
    bomb = gzip.compress(b'{"inputs": [' + b" " * (8 << 20) + b"]}", compresslevel=1)  # 8 MiB inflated, 1 MiB limit
    assert len(bomb) < 1 << 20
    r = httpx.post(url, content=bomb, headers={"Content-Encoding": "gzip"}, timeout=60)
    assert r.status_code == 413 and "once inflated" in r.json()["error"], r.text
    r = httpx.post(url, content=b"not gzip at all", headers={"Content-Encoding": "gzip"}, timeout=60)
    assert r.status_code == 400 and "not valid gzip" in r.json()["error"]
    r = httpx.post(url, content=b"{}", headers={"Content-Encoding": "br"}, timeout=60)
    assert r.status_code == 415 and "br" in r.json()["error"]
    body = json.dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["I lost my card"]}]})
    r = httpx.post(url, content=zlib.compress(body.encode()), headers={"Content-Encoding": "deflate"}, timeout=60)
    expected = _v1_labels(served, served.text, ["I lost my card"])
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == expected


def test_malformed_binary_tensors_are_400s(served: Served) -> None:
    url = f"{served.url}/v2/models/{served.text}/infer"
    header = json.dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": 20}}]}).encode()
    r = httpx.post(url, content=header + b"\x10\x00\x00\x00short", timeout=30,
                   headers={"Inference-Header-Content-Length": str(len(header))})
    assert r.status_code == 400 and "runs past the end" in r.json()["error"], r.text
    r = httpx.post(url, content=header, timeout=30, headers={"Inference-Header-Content-Length": "99999"})
    assert r.status_code == 400 and "Inference-Header-Content-Length" in r.json()["error"]
    bad_utf8 = b"\x02\x00\x00\x00\xff\xfe"
    header = json.dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": len(bad_utf8)}}]}).encode()
    r = httpx.post(url, content=header + bad_utf8, timeout=30,
                   headers={"Inference-Header-Content-Length": str(len(header))})
    assert r.status_code == 400 and "not UTF-8" in r.json()["error"]


def test_triton_tabular_numeric_and_bytes_columns(served: Served, tc: triton.InferenceServerClient) -> None:
    meta = tc.get_model_metadata(served.tabular)
    columns = [i for i in meta["inputs"] if i["name"] != "records" and i["name"] in served.records[0]]
    rows = served.records[:6]
    for binary in (True, False):
        inputs = []
        for col in columns:
            values = [r[col["name"]] for r in rows]
            tensor = triton.InferInput(col["name"], [len(rows)], col["datatype"])
            array = np.array(values, dtype=np.float32 if col["datatype"] == "FP32" else np.object_)
            if col["datatype"] != "FP32":
                array = np.array([str(v) for v in values], dtype=np.object_)
            tensor.set_data_from_numpy(array, binary_data=binary)
            inputs.append(tensor)
        assert {c["datatype"] for c in columns} == {"FP32", "BYTES"}
        result = tc.infer(served.tabular, inputs)
        assert [x.decode() for x in result.as_numpy("label").tolist()] == _v1_labels(served, served.tabular, rows)


def test_triton_raw_image_bytes(served: Served, tc: triton.InferenceServerClient) -> None:
    tensor = triton.InferInput("image", [2], "BYTES")
    tensor.set_data_from_numpy(np.array([served.png, served.png], dtype=np.object_), binary_data=True)
    result = tc.infer(served.image, [tensor])
    expected = _v1_labels(served, served.image, [base64.b64encode(served.png).decode()])
    assert [x.decode() for x in result.as_numpy("label").tolist()] == expected * 2


def test_triton_errors_keep_the_v2_shape(served: Served, tc: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as info:
        tc.infer(served.recommend, [_text_input(["x"], binary=True)])
    assert "recommend" in str(info.value)  # names the routes a recommender answers
    r = httpx.post(f"{served.url}/v2/models/{served.text}/infer", content=b"{", timeout=30)
    assert r.status_code == 400 and isinstance(r.json()["error"], str)


# ----- openai ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def oa(served: Served) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0, timeout=120)


def _chat(oa: openai.OpenAI, served: Served, **kw: Any) -> tuple[str, str | None]:
    r = oa.chat.completions.create(model=served.chat, messages=[{"role": "user", "content": QUESTION}], **kw)
    return r.choices[0].message.content or "", r.choices[0].finish_reason


def _chat_stream(oa: openai.OpenAI, served: Served, **kw: Any) -> tuple[str, str | None]:
    text, finish = "", None
    for chunk in oa.chat.completions.create(model=served.chat, messages=[{"role": "user", "content": QUESTION}],
                                            stream=True, **kw):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    return text, finish


def test_openai_chat_streamed_and_not_agree(oa: openai.OpenAI, served: Served) -> None:
    full, finish = _chat(oa, served)
    assert "Settings" in full and finish == "stop"
    assert _chat_stream(oa, served) == (full, "stop")


def test_openai_max_tokens_cuts_and_says_length(oa: openai.OpenAI, served: Served) -> None:
    full, _ = _chat(oa, served)
    cut, finish = _chat(oa, served, max_tokens=5)
    assert finish == "length" and full.startswith(cut) and len(cut.split()) <= 5 < len(full.split())
    assert _chat_stream(oa, served, max_tokens=5) == (cut, "length")
    r = oa.chat.completions.create(model=served.chat, messages=[{"role": "user", "content": QUESTION}],
                                   max_completion_tokens=5)
    assert r.usage is not None and r.usage.completion_tokens == 5 and r.choices[0].finish_reason == "length"


def test_openai_stop_sequences(oa: openai.OpenAI, served: Served) -> None:
    full, _ = _chat(oa, served)
    word = full.split()[3]
    cut, finish = _chat(oa, served, stop=[word, "zzz-never"])
    assert finish == "stop" and cut == full[:full.index(word)] and word not in cut
    assert _chat_stream(oa, served, stop=word) == (cut, "stop")


def test_openai_roles_developer_and_tool(oa: openai.OpenAI, served: Served) -> None:
    r = oa.chat.completions.create(model=served.chat, messages=[
        {"role": "developer", "content": "Answer briefly."},
        {"role": "user", "content": "What can you do?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "nothing found"},
        {"role": "user", "content": QUESTION}])
    assert "Settings" in (r.choices[0].message.content or "")


def test_openai_models_list_and_retrieve(oa: openai.OpenAI, served: Served) -> None:
    ids = {m.id for m in oa.models.list()}
    assert {served.text, served.tabular, served.image, served.recommend, served.chat} <= ids
    model = oa.models.retrieve(served.chat)
    assert model.id == served.chat and model.object == "model" and model.owned_by == "aiforge"
    with pytest.raises(openai.NotFoundError) as info:
        oa.models.retrieve("no-such-model")
    assert "no-such-model" in info.value.message


def test_openai_completions(oa: openai.OpenAI, served: Served) -> None:
    full, _ = _chat(oa, served)
    r = oa.completions.create(model=served.chat, prompt=QUESTION)
    assert r.object == "text_completion" and r.choices[0].text == full and r.choices[0].finish_reason == "stop"
    r = oa.completions.create(model=served.chat, prompt=QUESTION, max_tokens=4)
    assert r.choices[0].finish_reason == "length" and full.startswith(r.choices[0].text)
    streamed = "".join(c.choices[0].text for c in oa.completions.create(model=served.chat, prompt=QUESTION,
                                                                       stream=True) if c.choices)
    assert streamed == full


def test_openai_embeddings_texts_token_ids_and_dimensions(oa: openai.OpenAI, served: Served) -> None:
    from tokenizers import Tokenizer

    texts = ["reset my password", "shipping to Canada"]
    by_text = np.array([d.embedding for d in oa.embeddings.create(model=served.chat, input=texts).data])
    assert by_text.shape[0] == 2 and np.allclose(np.linalg.norm(by_text, axis=1), 1, atol=1e-3)
    ids = [Tokenizer.from_file(str(served.tokenizer)).encode(t, add_special_tokens=False).ids for t in texts]
    by_ids = np.array([d.embedding for d in oa.embeddings.create(model=served.chat, input=ids).data])
    assert np.allclose(by_ids, by_text, atol=1e-4)
    [one] = oa.embeddings.create(model=served.chat, input=ids[0]).data  # a single token-id array
    assert np.allclose(one.embedding, by_text[0], atol=1e-4)
    same = oa.embeddings.create(model=served.chat, input=texts, dimensions=by_text.shape[1])
    assert np.allclose([d.embedding for d in same.data], by_text, atol=1e-6)
    with pytest.raises(openai.BadRequestError) as info:
        oa.embeddings.create(model=served.chat, input=texts, dimensions=8)
    assert info.value.body["param"] == "dimensions" and str(by_text.shape[1]) in info.value.message
    with pytest.raises(openai.BadRequestError) as info:
        oa.embeddings.create(model=served.chat, input=[[10 ** 9]])
    assert "vocabulary" in info.value.message


@pytest.mark.parametrize(("kwargs", "param"), [
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]}, "tools"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}, "response_format"),
    ({"response_format": {"type": "yaml"}}, "response_format"),
    ({"logprobs": True}, "logprobs"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"seed": 7}, "seed"),
    ({"top_p": 0.5}, "top_p"),
    ({"presence_penalty": 1.0}, "presence_penalty"),
    ({"extra_body": {"no_such_field": 1}}, "no_such_field"),
    ({"n": 2}, "n"),
    ({"max_tokens": 10_000}, "max_tokens"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_openai_unsupported_parameters_are_400s_in_openai_shape(oa: openai.OpenAI, served: Served,
                                                                kwargs: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        _chat(oa, served, **kwargs)
    body = info.value.body
    assert isinstance(body, dict) and set(body) == {"message", "type", "param", "code"}
    assert body["type"] == "invalid_request_error" and body["param"] == param, body
    assert param in body["message"]


JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "verdict", "strict": True, "schema": {
    "type": "object", "properties": {"format": {"type": "string"}}, "required": ["format"]}}}


def test_openai_json_object_is_an_answer_with_citations_from_the_extractive_backend(oa: openai.OpenAI,
                                                                                     served: Served) -> None:
    full, _ = _chat(oa, served)
    text, finish = _chat(oa, served, response_format={"type": "json_object"})
    answer = json.loads(text)
    assert finish == "stop" and set(answer) == {"answer", "citations"} and answer["answer"] == full
    assert answer["citations"] and all(f"[{c['id']}]" in full and c["source"] for c in answer["citations"])
    assert _chat_stream(oa, served, response_format={"type": "json_object"}) == (text, "stop")
    cut, finish = _chat(oa, served, response_format={"type": "json_object"}, max_tokens=5)
    short = json.loads(cut)["answer"]
    assert finish == "length" and full.startswith(short) and len(short) < len(full)
    hello = oa.chat.completions.create(model=served.chat, messages=[{"role": "user", "content": "Hello!"}],
                                       response_format={"type": "json_object"})
    assert json.loads(hello.choices[0].message.content or "") == {"answer": "Hello! Ask me about Acme Storage.",
                                                                  "citations": []}


@pytest.mark.parametrize("response_format", [{"type": "json_object"}, JSON_SCHEMA], ids=["json_object", "json_schema"])
def test_openai_response_format_is_passed_to_an_openai_compatible_upstream(oa: openai.OpenAI, served: Served,
                                                                           response_format: dict[str, Any]) -> None:
    before = len(served.upstream.bodies)
    r = oa.chat.completions.create(model=served.relay, messages=[{"role": "user", "content": QUESTION}],
                                   response_format=response_format)  # type: ignore[arg-type]
    assert json.loads(r.choices[0].message.content or "") == {"format": response_format["type"]}
    [sent] = served.upstream.bodies[before:]
    assert sent["response_format"] == response_format and sent["model"] == "upstream-model"
    streamed = "".join(c.choices[0].delta.content or "" for c in oa.chat.completions.create(
        model=served.relay, messages=[{"role": "user", "content": QUESTION}], response_format=response_format,
        stream=True) if c.choices)  # type: ignore[call-overload]
    assert streamed == r.choices[0].message.content
    plain = oa.chat.completions.create(model=served.relay, messages=[{"role": "user", "content": QUESTION}])
    assert plain.choices[0].message.content == '{"format": null}'
    assert "response_format" not in served.upstream.bodies[-1]


def test_openai_response_format_on_an_answer_no_upstream_wrote(oa: openai.OpenAI, served: Served) -> None:
    hello = [{"role": "user", "content": "Hello!"}]  # the greet intent answers: a template, not the upstream
    before = len(served.upstream.bodies)
    r = oa.chat.completions.create(model=served.relay, messages=hello,  # type: ignore[arg-type]
                                   response_format={"type": "json_object"})
    assert json.loads(r.choices[0].message.content or "")["answer"].startswith("Hello!")
    with pytest.raises(openai.BadRequestError) as info:
        oa.chat.completions.create(model=served.relay, messages=hello,  # type: ignore[arg-type]
                                   response_format=JSON_SCHEMA)  # type: ignore[arg-type]
    assert info.value.body["param"] == "response_format" and "intent" in info.value.message
    assert len(served.upstream.bodies) == before


def test_openai_error_shape_on_every_openai_route(served: Served) -> None:
    for method, path, body in [("POST", "/v1/chat/completions", {"model": served.chat, "messages": []}),
                               ("POST", "/v1/chat/completions", {"model": served.text, "messages": [
                                   {"role": "user", "content": "hi"}]}),
                               ("POST", "/v1/embeddings", {"model": served.chat}),
                               ("POST", "/v1/completions", {"model": "nope", "prompt": "x"}),
                               ("GET", "/v1/models/nope", None)]:
        r = httpx.request(method, served.url + path, json=body, timeout=30)
        assert r.status_code in (400, 404), (path, r.status_code, r.text)
        error = r.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"], (path, error)
    r = httpx.post(f"{served.url}/v1/models/{served.text}/predict", json={"inputs": []}, timeout=30)
    assert r.status_code == 422 and isinstance(r.json()["error"], str)  # the simple JSON routes keep theirs


# ----- LangChain ---------------------------------------------------------------------------------

def test_langchain_chat_and_embeddings(served: Served, tmp_path: Path) -> None:
    from langchain_openai import ChatOpenAI, OpenAIEmbeddings

    llm = ChatOpenAI(model=served.chat, base_url=f"{served.url}/v1", api_key="unused", max_retries=0, timeout=120)
    answer = llm.invoke(QUESTION)
    assert "Settings" in str(answer.content)
    assert "".join(str(c.content) for c in llm.stream(QUESTION)) == answer.content
    short = llm.bind(max_tokens=3).invoke(QUESTION)
    assert short.response_metadata["finish_reason"] == "length"
    texts = ["reset my password", "shipping to Canada"]
    plain = OpenAIEmbeddings(model=served.chat, base_url=f"{served.url}/v1", api_key="unused",
                             check_embedding_ctx_length=False)
    vectors = np.array(plain.embed_documents(texts))
    assert vectors.shape[0] == 2 and np.allclose(plain.embed_query(texts[0]), vectors[0], atol=1e-6)
    # Token-id arrays, as OpenAIEmbeddings sends by default; its tokenizer is the bundle's own (tiktoken's
    # files would need the network), so the ids decode back to the same texts.
    tok_dir = tmp_path / "tokenizer"
    tok_dir.mkdir()
    shutil.copy(served.tokenizer, tok_dir / "tokenizer.json")
    (tok_dir / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast"}))
    by_ids = OpenAIEmbeddings(model=served.chat, base_url=f"{served.url}/v1", api_key="unused",
                              tiktoken_enabled=False, tiktoken_model_name=str(tok_dir), show_progress_bar=False)
    assert np.allclose(np.array(by_ids.embed_documents(texts)), vectors, atol=1e-3)


# ----- promtool, OpenAPI -------------------------------------------------------------------------

def test_promtool_accepts_the_metrics_of_a_server_holding_every_kind(served: Served) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install prometheus (make install does it where root)"
    _v1_labels(served, served.text, ["I lost my card"])  # every family has samples
    text = httpx.get(f"{served.url}/metrics", timeout=30).text
    assert "aiforge_runtime_events_total{" in text and "aiforge_runtime_count" not in text
    proc = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and not proc.stdout.strip() and not proc.stderr.strip(), proc.stdout + proc.stderr


def _schema_for(spec: dict[str, Any], path: str, method: str, status: int, ctype: str = "application/json") -> Any:
    response = spec["paths"][path][method]["responses"][str(status)]
    return {**response["content"][ctype]["schema"], "components": spec["components"]}


def test_openapi_schema_is_valid_typed_and_matches_served_answers(served: Served) -> None:
    from openapi_schema_validator import OAS31Validator
    from openapi_spec_validator import validate

    spec = httpx.get(f"{served.url}/openapi.json", timeout=30).json()
    validate(spec)
    for path, item in spec["paths"].items():
        for method, op in item.items():
            ok = op["responses"].get("200") or op["responses"].get("201")
            assert ok, (path, method)
            if set(ok["content"]) == {"text/html"}:  # a page (a bundle's report.html): documented as HTML
                assert path.endswith("/report"), (path, method)
            else:
                assert ok["content"]["application/json"]["schema"] not in ({}, {"type": "object"}), (path, method)
                assert "title" not in ok["content"]["application/json"]["schema"] or "$ref" in \
                    ok["content"]["application/json"]["schema"] or path.startswith("/v2/health"), (path, method)
            if method == "post":
                assert "requestBody" in op, path
            for code, response in op["responses"].items():
                if code.startswith(("4", "5")) and (path, code) != ("/v2/health/ready", "503"):
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/OpenAIErrorBody" if is_openai_path(path) else "/ErrorBody"), (path, code)
    s = served
    calls = [
        ("get", "/v2", "/v2", None, 200), ("get", "/v2/health/ready", "/v2/health/ready", None, 200),
        ("get", f"/v2/models/{s.text}", "/v2/models/{name}", None, 200),
        ("post", f"/v2/models/{s.text}/infer", "/v2/models/{name}/infer",
         {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hi"]}]}, 200),
        ("post", f"/v2/models/{s.text}/infer", "/v2/models/{name}/infer", {"inputs": []}, 422),
        ("get", "/v1/models", "/v1/models", None, 200), ("get", f"/v1/models/{s.chat}", "/v1/models/{name}", None, 200),
        ("get", "/v1/models/nope", "/v1/models/{name}", None, 404),
        ("post", f"/v1/models/{s.tabular}/predict", "/v1/models/{name}/predict", {"inputs": s.records[:2]}, 200),
        ("post", f"/v1/models/{s.image}/classify", "/v1/models/{name}/classify",
         {"images": [base64.b64encode(s.png).decode()]}, 200),
        ("post", f"/v1/models/{s.recommend}/recommend", "/v1/models/{name}/recommend",
         {"user": s.user, "k": 3}, 200),
        ("post", f"/v1/models/{s.recommend}/similar", "/v1/models/{name}/similar", {"item": "nope"}, 404),
        ("post", "/v1/chat/completions", "/v1/chat/completions",
         {"model": s.chat, "messages": [{"role": "user", "content": QUESTION}]}, 200),
        ("post", "/v1/chat/completions", "/v1/chat/completions", {"model": s.chat, "messages": [], "x": 1}, 400),
        ("post", "/v1/completions", "/v1/completions", {"model": s.chat, "prompt": QUESTION}, 200),
        ("post", "/v1/embeddings", "/v1/embeddings", {"model": s.chat, "input": "hi"}, 200),
        ("post", "/v1/chat/sessions", "/v1/chat/sessions", {"model": s.chat}, 201),
    ]
    for method, url, template, body, status in calls:
        r = httpx.request(method, s.url + url, json=body, timeout=60)
        assert r.status_code == status, (url, r.status_code, r.text)
        OAS31Validator(_schema_for(spec, template, method, status)).validate(r.json())


# ----- af.Client ---------------------------------------------------------------------------------

def test_af_client_one_method_per_route(served: Served) -> None:
    from aiforge.errors import ServerError

    with Client(served.url) as client:
        assert client.ready() and {m["name"] for m in client.models()} >= {served.text, served.chat}
        [text] = client.predict(served.text, ["I lost my card"])
        assert text.label in text.scores and text.label == _v1_labels(served, served.text, ["I lost my card"])[0]
        tab = client.predict(served.tabular, served.records[:3])
        assert [p.label for p in tab] == _v1_labels(served, served.tabular, served.records[:3])
        [version] = client.metadata(served.tabular)["versions"]
        assert [p.label for p in client.predict(served.tabular, served.records[:3], version=version)] == \
            [p.label for p in tab]
        [img] = client.classify_images(served.image, [served.png], top_k=2)
        assert len(img.top) == 2 and img.label == img.top[0][0] == client.predict(served.image, [served.png])[0].label
        recs = client.recommend(served.recommend, user=served.user, k=3)
        assert len(recs.items) == 3 and recs.cold_start is None and recs.items[0].rank == 1
        new = client.recommend(served.recommend, items=[recs.items[0].item], k=2)
        assert new.cold_start == "items" and len(new.items) == 2
        similar = client.similar(served.recommend, recs.items[0].item, k=2)
        assert len(similar) == 2 and recs.items[0].item not in [r.item for r in similar]
        answer = client.chat(served.chat, QUESTION)
        assert "Settings" in answer.text and answer.citations and answer.kind == "retrieval"
        assert client.chat(served.chat, QUESTION, max_tokens=3).finish_reason == "length"
        greeting = client.chat(served.chat, "Hello!")
        assert greeting.kind == "intent" and greeting.intent == "greet"
        sid = client.create_session(served.chat)
        client.chat(served.chat, QUESTION, session_id=sid)
        assert [m["role"] for m in client.session(sid)] == ["user", "assistant"]
        client.delete_session(sid)
        vectors = client.embed(served.chat, ["a", "b"])
        assert vectors.shape[0] == 2 and vectors.dtype == np.float32
        with pytest.raises(ServerError) as info:
            client.recommend(served.text, user=served.user)
        assert info.value.status == 400 and "recommend" in str(info.value)
        with pytest.raises(ServerError) as info:
            client.chat(served.chat, QUESTION, max_tokens=10_000)
        assert info.value.status == 400 and "max_tokens" in str(info.value)

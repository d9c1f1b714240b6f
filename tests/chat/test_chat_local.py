"""The local SmolLM2 backend: exported once to ONNX with a KV cache and served without PyTorch, and aiforge's own
``openai`` backend using that server as its upstream over loopback (slow: exports and runs a real 135M model)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from chat_helpers import build_bundle, spec_dict, write_docs

from aiforge.errors import GenerationError
from aiforge.tasks.chat.api import load_chat
from aiforge.tasks.chat.generate import GenerationRequest, Passage, build_messages, load_local_model
from aiforge.tasks.chat.llm_export import DEFAULT_PRECISION, cached_local_llm, transformers_greedy
from aiforge.tasks.chat.local_llm import IncrementalDecoder, OnnxLLM, OnnxLocalGenerator, chatml
from serve_helpers import RunningServer, serving

# The first test also waits for the one-time export (SmolLM2 loaded through transformers): minutes when busy.
pytestmark = [pytest.mark.slow, pytest.mark.heavy, pytest.mark.usefixtures("chat_env"), pytest.mark.timeout(1800)]

KEY = "upstream-key-42"


@pytest.fixture(scope="module")
def local_bundle(chat_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """(IndexResult, registry home) of a local-backend bundle; its build exports the ONNX model once."""
    root = tmp_path_factory.mktemp("local")
    docs = write_docs(root / "docs")
    mp = pytest.MonkeyPatch()
    mp.setenv("AIFORGE_CACHE", str(chat_cache))
    try:
        raw = spec_dict(docs, name="acme-local", generation={"backend": "local", "max_tokens": 24},
                        retrieval={"k": 2}, limits={"max_message_chars": 8000, "max_tokens": 64})
        built = build_bundle(raw, root / "home", root / "spec")
    finally:
        mp.undo()
    return built, root / "home"


@pytest.fixture(scope="module")
def local_server(local_bundle: tuple[Any, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    built, home = local_bundle
    root = tmp_path_factory.mktemp("local-server")
    keys = root / "keys.txt"
    keys.write_text(KEY + "\n", encoding="utf-8")
    with serving(built.exported.path, home, root / "server.log",
                 extra=["--api-key-file", str(keys), "--timeout", "120"]) as running:
        yield running


@pytest.fixture(scope="module")
def onnx_local(local_bundle: tuple[Any, Path]) -> OnnxLocalGenerator:
    rt = load_chat(local_bundle[0].exported.path)
    assert isinstance(rt.generator, OnnxLocalGenerator)
    return rt.generator


def _mapped_libraries(pid: int) -> set[str]:
    with open(f"/proc/{pid}/maps", encoding="utf-8") as fh:
        return {Path(line.split()[-1]).name for line in fh if "/" in line}


def test_local_model_streams_tokens_with_citations_and_never_loads_torch(local_server: RunningServer) -> None:
    client = openai.OpenAI(base_url=f"{local_server.url}/v1", api_key=KEY, max_retries=0, timeout=120)
    chunks = list(client.chat.completions.create(
        model="acme-local", stream=True, max_tokens=16,
        messages=[{"role": "user", "content": "How do I reset my password?"}]))
    deltas = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert len(deltas) >= 3, f"expected token-by-token deltas, got {deltas}"
    assert len(deltas) <= 16 + 1
    last = chunks[-1]
    assert last.choices[0].finish_reason in ("stop", "length")
    assert (last.model_extra or {})["citations"][0]["source"] == "docs/guide.md"
    libs = _mapped_libraries(local_server.proc.pid)  # the server process itself, after it answered
    assert any(lib.startswith("libonnxruntime") for lib in libs), sorted(libs)[:40]
    assert not [lib for lib in libs if lib.startswith(("libtorch", "libc10"))], "the server loaded PyTorch"


def test_chat_template_without_transformers_equals_apply_chat_template() -> None:
    tok, _ = load_local_model()
    req = GenerationRequest("When are refunds issued?", [Passage(1, 0, "docs/billing.html", "Refunds",
                                                                 "Refunds are issued within 14 days.", 0.5)],
                            history=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"}])
    for messages in (build_messages(req), [{"role": "user", "content": "Écris « bonjour » 🙂"}]):
        assert chatml(messages) == tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def test_onnx_greedy_tokens_equal_transformers(onnx_local: OnnxLocalGenerator, chat_cache: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIFORGE_CACHE", str(chat_cache))
    folder, record = cached_local_llm("fp32")  # exported with the bundle: read from the cache
    fp32 = OnnxLLM(folder / record["graph"], folder / record["tokenizer"], threads=1)
    served = onnx_local.llm
    assert onnx_local.record["precision"] == DEFAULT_PRECISION
    assert served.rescored == (DEFAULT_PRECISION != "fp32")  # a quantized graph rescores its head's top tokens
    tok, _ = load_local_model()
    passages = [Passage(1, 0, "docs/guide.md", "Resetting your password",
                        "To reset your password, open Settings, choose Security and click Reset password.", 0.6)]
    for messages in (build_messages(GenerationRequest("How do I reset my password?", passages)),
                     [{"role": "user", "content": "Name three colours."}]):
        prompt = served.encode(chatml(messages))
        assert prompt == tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"]
        want = transformers_greedy(messages, max_new_tokens=12)
        assert fp32.greedy_ids(prompt, max_new_tokens=12) == want, messages[-1]["content"]
        # the served (quantized) graph: the same first tokens; bench/chat_local.py measures how long it agrees
        assert served.greedy_ids(prompt, max_new_tokens=2) == want[:2], messages[-1]["content"]


def test_incremental_detokenization_keeps_multibyte_characters_whole(onnx_local: OnnxLocalGenerator) -> None:
    tokenizer = onnx_local.llm.tokenizer
    text = "Prix : 15 € — café, 日本語 and 🙂🚀 done."
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    assert len(ids) > len(text.split())  # some characters span several byte-level tokens
    decoder = IncrementalDecoder(tokenizer)
    pieces = [decoder.push(i) for i in ids] + [decoder.flush()]
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)


def test_closing_the_stream_stops_decoding_and_frees_the_model(onnx_local: OnnxLocalGenerator) -> None:
    llm = onnx_local.llm
    req = GenerationRequest("Write a long story about the sea.", [], max_tokens=64,
                            raw_messages=[{"role": "user", "content": "Write a long story about the sea."}])
    stream = onnx_local.stream(req)
    start = llm.steps
    first = [next(stream), next(stream)]
    assert all(first)
    stream.close()
    stopped = llm.steps
    assert stopped - start <= 4, "decoded ahead of the reader"
    done = threading.Event()

    def again() -> None:
        for _ in onnx_local.stream(GenerationRequest("hi", [], max_tokens=2,
                                                     raw_messages=[{"role": "user", "content": "hi"}])):
            pass
        done.set()

    worker = threading.Thread(target=again, daemon=True)
    worker.start()
    assert done.wait(120), "the generation lock was not released by closing the stream"
    assert llm.steps - stopped <= 2  # only the second request decoded: the first one never resumed


def test_a_dropped_http_stream_does_not_block_the_next_request(local_server: RunningServer) -> None:
    body = {"model": "acme-local", "stream": True, "max_tokens": 64,
            "messages": [{"role": "user", "content": "Tell me everything about storage quotas."}]}
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.stream("POST", f"{local_server.url}/v1/chat/completions", json=body, headers=headers,
                      timeout=120) as resp:
        assert resp.status_code == 200
        lines = resp.iter_lines()
        assert any(line.startswith("data:") for line in (next(lines), next(lines), next(lines)))
    reply = httpx.post(f"{local_server.url}/v1/chat/completions", headers=headers, timeout=120,
                       json={**body, "stream": False, "max_tokens": 4})
    assert reply.status_code == 200, reply.text
    assert reply.json()["usage"]["completion_tokens"] <= 4


def test_aiforge_openai_backend_talks_to_aiforge_server(local_server: RunningServer, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    docs = write_docs(tmp_path / "docs")
    generation = {"backend": "openai", "base_url": f"{local_server.url}/v1", "model": "acme-local",
                  "api_key_env": "ACME_UPSTREAM_KEY", "max_tokens": 12, "extra_body": {"retrieval": False}}
    built = build_bundle(spec_dict(docs, name="acme-upstream", generation=generation, retrieval={"k": 2}),
                         tmp_path / "home", tmp_path / "spec")
    rt = load_chat(built.exported.path)
    monkeypatch.delenv("ACME_UPSTREAM_KEY", raising=False)
    with pytest.raises(GenerationError, match="ACME_UPSTREAM_KEY is not set"):
        rt.ask("When are refunds issued?")
    monkeypatch.setenv("ACME_UPSTREAM_KEY", "wrong-key")
    with pytest.raises(GenerationError, match="answered 401"):
        rt.ask("When are refunds issued?")
    monkeypatch.setenv("ACME_UPSTREAM_KEY", KEY)
    turn = rt.ask("When are refunds issued?")
    assert turn.kind == "retrieval" and turn.text.strip(), turn
    assert 1 <= turn.completion_tokens <= 13
    assert turn.citations[0]["source"] == "docs/billing.html"
    log = (local_server.log).read_text(encoding="utf-8", errors="replace")
    assert KEY not in log

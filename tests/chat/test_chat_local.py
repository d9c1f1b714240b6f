"""The local SmolLM2 backend served by aiforge, and aiforge's own ``openai`` backend using that server as its
upstream over loopback (slow: loads a real 135M-parameter model)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from chat_helpers import build_bundle, spec_dict, write_docs

from aiforge.errors import GenerationError
from aiforge.tasks.chat.api import load_chat
from serve_helpers import RunningServer, serving

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("chat_env")]

KEY = "upstream-key-42"


@pytest.fixture(scope="module")
def local_server(chat_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
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
    keys = root / "keys.txt"
    keys.write_text(KEY + "\n", encoding="utf-8")
    with serving(built.exported.path, root / "home", root / "server.log",
                 extra=["--api-key-file", str(keys), "--timeout", "120"]) as running:
        yield running


def test_local_model_streams_tokens_with_citations(local_server: RunningServer) -> None:
    client = openai.OpenAI(base_url=f"{local_server.url}/v1", api_key=KEY, max_retries=0, timeout=120)
    chunks = list(client.chat.completions.create(
        model="acme-local", stream=True, max_tokens=16,
        messages=[{"role": "user", "content": "How do I reset my password?"}]))
    deltas = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert len(deltas) >= 3, f"expected token-by-token deltas, got {deltas}"
    assert len(deltas) <= 16 + 1
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert (last.model_extra or {})["citations"][0]["source"] == "docs/guide.md"


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

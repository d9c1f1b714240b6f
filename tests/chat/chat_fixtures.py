"""Fixtures of the chat tests (a pytest plugin, loaded by tests/conftest.py for every test module)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from chat_helpers import Acme, build_bundle, spec_dict, write_docs


@pytest.fixture(scope="session")
def chat_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One encoder export (ONNX + parity) for the whole session."""
    from aiforge.hub.encoder_export import cached_encoder

    cache = tmp_path_factory.mktemp("chat-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("AIFORGE_CACHE", str(cache))
    try:
        cached_encoder("minilm-l6")
    finally:
        mp.undo()
    return cache


@pytest.fixture
def chat_env(chat_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The session's encoder cache as $AIFORGE_CACHE (chat test modules use it autouse)."""
    monkeypatch.setenv("AIFORGE_CACHE", str(chat_cache))
    yield


@pytest.fixture(scope="session")
def acme(chat_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Acme:
    """A chat bundle (extractive) over the test docs, built once per session; read it, never modify it."""
    root = tmp_path_factory.mktemp("acme")
    docs = write_docs(root / "docs")
    mp = pytest.MonkeyPatch()
    mp.setenv("AIFORGE_CACHE", str(chat_cache))
    try:
        result = build_bundle(spec_dict(docs), root / "home", root / "spec")
    finally:
        mp.undo()
    return Acme(root / "home", docs, result)

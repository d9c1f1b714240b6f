"""Fixtures of the browser tests: one Chromium for the session, one ``aiforge serve`` of a bundle of every kind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, sync_playwright
from web_helpers import CHROMIUM, LAUNCH_ARGS, Opened, Site, injected_chat_docs, injected_table, open_page

from aiforge.serve.loadgen import aiforge_server_args, free_port, start_server


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield chromium
        chromium.close()


def _serve(bundles: list[Path], home: Path, log: Path, extra: list[str] | None = None) -> tuple[Any, int]:
    from serve_helpers import server_env  # tests/ is on sys.path (rootdir conftest)

    port = free_port()
    proc, _ = start_server(aiforge_server_args([str(b) for b in bundles], port=port, extra=extra), port=port,
                           env=server_env(home), log=log, timeout=180)
    return proc, port


def _stop(proc: Any) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except Exception:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def injected_tab(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A tabular bundle whose label and a category are script, shipped (gates pass) in its own registry."""
    from tabular_helpers import fit_export

    from aiforge.audit.ship import ship

    root = tmp_path_factory.mktemp("inject-tab")
    fitted = fit_export(injected_table(root / "data"), root / "home")
    report = ship(str(fitted.path), home=root / "home")
    assert report.passed, report.to_dict()
    return fitted


@pytest.fixture(scope="session")
def injected_chat(chat_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A chat bundle (extractive) over notes, one of which carries script in its text."""
    from chat_helpers import build_bundle, spec_dict

    root = tmp_path_factory.mktemp("inject-chat")
    docs = injected_chat_docs(root / "docs")
    mp = pytest.MonkeyPatch()
    mp.setenv("AIFORGE_CACHE", str(chat_cache))
    try:
        result = build_bundle(spec_dict(docs, name="notes"), root / "home", root / "spec")
    finally:
        mp.undo()
    return Path(result.exported.path)


@pytest.fixture(scope="session")
def site(trained_bundle: Any, german: Any, rec_bundle: Any, injected_tab: Any, injected_chat: Path,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """``aiforge serve`` of a bundle of every kind (the shipped tabular one's registry as the server's home)."""
    from driving_helpers import trained_driving
    from vision_helpers import trained_images

    images = trained_images()
    paths = {"text": Path(trained_bundle.export.path), "tabular": german.path, "image": Path(images.export.path),
             "recommend": Path(rec_bundle.export.path), "chat": injected_chat, "injected": injected_tab.path,
             "driving": trained_driving().path}
    log = tmp_path_factory.mktemp("web-server") / "server.log"
    proc, port = _serve(list(paths.values()), injected_tab.home, log)
    names = {kind: path.parent.name for kind, path in paths.items()}
    try:
        yield Site(f"http://127.0.0.1:{port}", names, paths, injected_tab.home, log)
    finally:
        _stop(proc)


@pytest.fixture
def keyed_site(injected_tab: Any, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The shipped tabular bundle served behind an API key: (origin, key)."""
    key = "web-test-key-0123456789"
    keys = tmp_path / "keys.txt"
    keys.write_text(key + "\n", encoding="utf-8")
    proc, port = _serve([injected_tab.path], injected_tab.home, tmp_path / "server.log", ["--api-key-file", str(keys)])
    try:
        yield f"http://127.0.0.1:{port}", key
    finally:
        _stop(proc)


@pytest.fixture
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where this session's screenshots go (a test artifact; $AIFORGE_WEB_SHOTS gets a copy)."""
    return tmp_path_factory.getbasetemp() / "web-shots"


@pytest.fixture
def opened(browser: Browser, site: Site) -> Iterator[Opened]:
    """A page on the site; afterwards, no request may have left loopback and no script error may have occurred."""
    page = open_page(browser, site.origin)
    try:
        yield page
        assert not page.external(), f"requests outside the server: {page.external()}"
        assert not page.blocked, page.blocked
        assert not page.errors, page.errors
    finally:
        page.context.close()

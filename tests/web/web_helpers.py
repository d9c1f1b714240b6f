"""Helpers for the browser tests: one Chromium per session (Debian's, driven by Playwright), pages whose
network is cut to the server under test, and the small bundles whose labels and documents carry script."""

from __future__ import annotations

import csv
import json
import os
import random
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, BrowserContext, Page, Request, Route

__all__ = ["CHROMIUM", "INJECTED", "INJECTED_SOURCE", "Opened", "Site", "call", "injected_chat_docs", "injected_table",
           "open_page"]

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
# What a model or a document could try to run in the page; each sets window.__pwned when executed.
INJECTED = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
INJECTED_LABEL = '<img src=x onerror="window.__pwned=1">'
INJECTED_CATEGORY = "<script>window.__pwned=3</script>"
INJECTED_SOURCE = 'warehouse <img src=x onerror="window.__pwned=4">.txt'


@dataclass(frozen=True)
class Site:
    """The server under test: its origin, the name of the bundle of each kind, and the process."""

    origin: str
    names: dict[str, str]
    paths: dict[str, Path]
    home: Path
    log: Path


@dataclass
class Opened:
    """A browser page on the server under test and everything it asked the network for."""

    page: Page
    context: BrowserContext
    origin: str
    requests: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    posts: list[tuple[str, bytes | None]] = field(default_factory=list)

    def external(self) -> list[str]:
        """Requests to anywhere but the server (blocked, and recorded here)."""
        return [u for u in self.requests if not (u.startswith(self.origin + "/") or u.startswith(("data:", "blob:",
                                                                                                 "about:")))]

    def goto(self, path: str) -> None:
        self.page.goto(self.origin + path)
        self.page.wait_for_selector("body[data-rendered='1']", timeout=30_000)

    def shot(self, folder: Path, name: str) -> Path:
        """A full-page screenshot (into ``folder`` and, when set, into $AIFORGE_WEB_SHOTS)."""
        folders = [folder, *([Path(os.environ["AIFORGE_WEB_SHOTS"])] if os.environ.get("AIFORGE_WEB_SHOTS") else [])]
        frame = self.page.locator("[data-testid=report-frame]")
        for where in folders:
            where.mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(where / f"{name}.png"), full_page=True)
            if frame.count():  # a full-page capture leaves the sandboxed frame blank: shoot it on its own
                frame.scroll_into_view_if_needed()
                frame.screenshot(path=str(where / f"{name}-report.png"))
        return folder / f"{name}.png"


def open_page(browser: Browser, origin: str) -> Opened:
    """A fresh context whose every request outside ``origin`` is aborted and logged."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    opened = Opened(page, context, origin)

    def gate(route: Route, request: Request) -> None:
        if request.url.startswith(origin + "/") or request.url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            opened.blocked.append(request.url)
            route.abort("internetdisconnected")

    context.route("**/*", gate)
    page.on("request", lambda r: (opened.requests.append(r.url),
                                  opened.posts.append((r.url, r.post_data_buffer)) if r.method == "POST" else None))
    page.on("pageerror", lambda e: opened.errors.append(str(e)))
    page.on("console", lambda m: opened.errors.append(m.text) if m.type == "error" else None)
    return opened


def call(url: str, body: Any = None, *, data: bytes | None = None, headers: dict[str, str] | None = None,
         method: str | None = None) -> tuple[int, Any]:
    """One HTTP call as a client makes it (JSON in, JSON out); (status, parsed body)."""
    payload = data if data is not None else None if body is None else json.dumps(body).encode()
    h = dict(headers or {})
    if body is not None:
        h.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=payload, headers=h, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def injected_table(folder: Path) -> dict[str, Any]:
    """A small tabular data set whose label and one category are script, and its spec (logistic, audited)."""
    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train.csv", 240), ("test.csv", 120)):
        with (folder / name).open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["amount", "colour", "group", "outcome"])
            for _ in range(n):
                amount = rng.uniform(0, 10)
                colour = rng.choice(["red", "blue", INJECTED_CATEGORY])
                group = rng.choice(["a", "b"])
                good = amount + (2 if colour == "red" else 0) + rng.gauss(0, 1.5) > 6
                w.writerow([f"{amount:.3f}", colour, group, "approved" if good else INJECTED_LABEL])
    return {"name": "inject-tab", "task": "tabular-classification",
            "data": {"train": str(folder / "train.csv"), "test": str(folder / "test.csv"), "label": "outcome",
                     "positive_label": "approved", "sensitive_features": ["group"]},
            "model": {"candidates": ["logistic"]}, "audit": {"bootstrap": 20},
            "gates": {"max_size_mb": 5, "min_accuracy": 0.5}}


def injected_chat_docs(folder: Path) -> Path:
    """A knowledge folder of two notes, one carrying script in its text."""
    folder.mkdir(parents=True, exist_ok=True)
    # chat strips markup from the text it quotes (aiforge/tasks/chat/sanitize.py); a file name reaches the page as is
    (folder / INJECTED_SOURCE).write_text(
        "The Lyon warehouse ships hardware keys within two business days. "
        f"Warehouse note: {INJECTED} end of note.\n", encoding="utf-8")
    (folder / "support.md").write_text(
        "# Support\n\nSupport hours are Monday to Friday, 9:00 to 17:00 Central European Time.\n"
        "Phone support is for paid plans.\n", encoding="utf-8")
    return folder

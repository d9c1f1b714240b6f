"""The pages (``/``, ``/ui/models/{name}``, ``/ui/static/...``, ``/ui/panels/{task}.js``) and their JSON.

The pages and their scripts need no key: they hold no data. Everything a page shows comes from
``/v1/ui/...`` (behind the API key, like every model route) and from the public model routes a
client calls. Every HTML answer carries a Content-Security-Policy that allows only this server's
own scripts, so the pages work offline and injected markup cannot run.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from html import escape
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict

from aiforge.bundle.registry import Registry
from aiforge.bundle.runtime import Runtime
from aiforge.errors import SpecError
from aiforge.serve.errors import ApiError
from aiforge.serve.metrics import ServerMetrics
from aiforge.serve.protocols import ErrorBody, ModelsDep, json_response, require_key
from aiforge.serve.web.info import REPORT, model_info, model_summary
from aiforge.serve.web.page import KindPage
from aiforge.serve.web.render import home_content, model_content
from aiforge.serve.web.stats import LiveStats
from aiforge.tasks.registry import get_kind, resolve

__all__ = ["CSP", "mount_web", "pages_router", "ui_router", "verified_file"]

CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
       "connect-src 'self'; frame-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'self'")
# A bundle's report.html shown in a sandboxed frame: its own inline styles and data: images, no script.
REPORT_CSP = "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:"
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
# The bundle files a page may fetch (replays, plots, recorded steps): media only, never graphs or code.
_BUNDLE_MEDIA = {".gif": "image/gif", ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
                 ".webp": "image/webp", ".json": "application/json"}
_SECURITY = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
             "Cache-Control": "no-cache"}

class ModelRow(BaseModel):
    """One served model as the home page lists it."""

    name: str
    version: str
    task: str
    precision: str
    stage: str | None = None
    size_bytes: int
    metrics: dict[str, Any]
    created: str


class UiModels(BaseModel):
    """``GET /v1/ui/models``: readiness, load failures and every served model."""

    ready: bool
    errors: list[dict[str, str]] | None = None
    loaded: Any = None
    models: list[ModelRow]


class UiModel(BaseModel):
    """``GET /v1/ui/models/{name}``: what the model page shows (card, metrics, fairness, ship, manifest)."""

    model_config = ConfigDict(extra="allow")

    card: str
    report_metrics: dict[str, Any] | None = None
    fairness: Any = None
    has_report: bool
    ship: dict[str, Any] | None = None
    manifest: dict[str, Any]
    provenance: Any = None
    parity: Any = None
    baseline: dict[str, Any] | None = None
    examples: dict[str, Any]


class UiStats(BaseModel):
    """``GET /v1/ui/stats``: the last minute's traffic and each model's queue depth."""

    window_s: float
    requests: int
    requests_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    items_per_s: dict[str, float]
    queue_depth: dict[str, int]


pages_router = APIRouter(include_in_schema=False)
ui_router = APIRouter(prefix="/v1/ui", tags=["web pages"], dependencies=[Depends(require_key)])


@functools.cache
def _static_files() -> dict[str, bytes]:
    """Every file of ``static/``, by name, read once from the installed package."""
    folder = resources.files("aiforge.serve.web").joinpath("static")
    return {f.name: f.read_bytes() for f in folder.iterdir() if f.is_file()}


def _asset(name: str, body: bytes) -> Response:
    media = _TYPES.get(Path(name).suffix, "application/octet-stream")
    return Response(body, media_type=media, headers=_SECURITY)


def _fill(template: bytes, parts: dict[str, str]) -> bytes:
    """``template`` with each ``<!--ssr:KEY-->`` replaced by ``parts[KEY]`` (escaped HTML) or removed."""
    text = template.decode("utf-8")
    for key, html in parts.items():
        text = text.replace(f"<!--ssr:{key}-->", html)
    return re.sub(r"<!--ssr:[a-z]+-->", "", text).encode("utf-8")


def _open(request: Request) -> bool:
    """Whether the server answers without a key (then the pages carry the data; else only health)."""
    return request.app.state.api_keys is None


@pages_router.get("/")
def home_page(request: Request, m: ModelsDep) -> Response:
    """The model list, rendered in the HTML when the server needs no key (the script refreshes it)."""
    parts = {}
    if _open(request):
        registry = _registry(request)
        parts["models"] = home_content(model_summary(s.runtime, registry) for s in m.services.values())
    else:
        parts["models"] = "<p>The model list needs an API key.</p>"
    return _asset("index.html", _fill(_static_files()["index.html"], parts))


@pages_router.get("/ui/models/{name}")
def model_page(name: str, request: Request, m: ModelsDep) -> Response:
    """The model page, its card, metrics, baseline, gates and manifest rendered in the HTML when no key is needed."""
    parts = {"name": escape(name), "title": escape(name)}
    service = m.services.get(name)
    if not _open(request):
        parts["summary"] = "<p>This page needs an API key.</p>"
    elif service is None:
        parts["summary"] = f'<p class="error" role="alert">No served model is named {escape(repr(name))}.</p>'
    else:
        info = model_info(service.runtime, _registry(request), {})
        parts.update(model_content(info), title=escape(f"{name} · {service.runtime.manifest.task}"))
    return _asset("model.html", _fill(_static_files()["model.html"], parts))


@pages_router.get("/ui/static/{filename}")
def static_file(filename: str) -> Response:
    body = _static_files().get(filename)
    if body is None or filename.endswith(".html"):
        raise ApiError(404, f"no static file {filename!r}")
    return _asset(filename, body)


def _page(task: str) -> KindPage | None:
    try:
        target = get_kind(task).page
    except SpecError:
        return None
    page = resolve(target) if target else None
    return page if isinstance(page, KindPage) else None


@pages_router.get("/ui/panels/{task}.js")
def panel_script(task: str) -> Response:
    page = _page(task)
    if page is None:
        raise ApiError(404, f"no try-it panel for task {task!r}")
    return _asset("panel.js", page.script_bytes())


def _registry(request: Request) -> Registry:
    return Registry(request.app.state.web_home)


@ui_router.get("/models", response_model=UiModels)
def ui_models(request: Request, m: ModelsDep) -> Response:
    """Every served model as the home page lists it, plus readiness and load failures."""
    registry = _registry(request)
    rows = [model_summary(s.runtime, registry) for s in m.services.values()]
    return json_response({**m.health(), "loaded": m.loaded, "models": rows})


@ui_router.get("/models/{name}", response_model=UiModel)
def ui_model(name: str, request: Request, m: ModelsDep) -> Response:
    """What the model page shows: card, metrics, fairness, last ship, manifest, provenance, examples."""
    service = m.get(name)
    page = _page(service.runtime.manifest.task)
    examples: dict[str, Any] = page.examples(service.runtime) if page is not None else {}
    return json_response(model_info(service.runtime, _registry(request), examples))


def verified_file(runtime: Runtime, filename: str) -> bytes:
    """The bytes of a file the bundle's manifest lists, checked against its sha256 as they are read.

    Raises:
        ApiError: 404 when the manifest does not list it (or it is gone); 409 when its bytes changed.
    """
    entry = runtime.manifest.files.get(filename)
    path = runtime.path / filename
    if entry is None or not path.is_file():
        raise ApiError(404, f"model {runtime.name!r} has no file {filename!r} in its manifest")
    body = path.read_bytes()
    if hashlib.sha256(body).hexdigest() != entry.get("sha256"):
        raise ApiError(409, f"{filename}: does not match the sha256 in the bundle's manifest; the bundle was "
                            "modified after export (re-export it, or run aiforge verify)")
    return body


@ui_router.get("/models/{name}/report", response_class=HTMLResponse,
               # an error is JSON (ErrorBody), whatever the page's own type
               responses={409: {"description": "the report no longer matches the manifest", "content": {
                   "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}})
def ui_report(name: str, m: ModelsDep) -> Response:
    """The bundle's ``report.html`` (plots, per-group tables, Grad-CAM maps), sandboxed: no script runs."""
    service = m.get(name)
    page = verified_file(service.runtime, REPORT).decode("utf-8", errors="replace")
    return HTMLResponse(_inline_media(service.runtime, page),
                        headers={"Content-Security-Policy": REPORT_CSP, "X-Content-Type-Options": "nosniff"})


_MEDIA_SRC = re.compile(r'src="([A-Za-z0-9_.-]+\.(?:gif|png|jpe?g|webp))"')


def _inline_media(runtime: Runtime, page: str) -> str:
    """``page`` with each ``src="FILE"`` naming a bundle image (the driving replay) made a verified data: URL,
    since the sandboxed frame may load nothing but data: images."""
    def inline(match: re.Match[str]) -> str:
        filename = match.group(1)
        if filename not in runtime.manifest.files:
            return match.group(0)
        media = _BUNDLE_MEDIA[Path(filename).suffix.lower()]
        return f'src="data:{media};base64,{base64.b64encode(verified_file(runtime, filename)).decode("ascii")}"'

    return _MEDIA_SRC.sub(inline, page)


@ui_router.get("/models/{name}/files/{filename}",
               responses={200: {"content": {t: {"schema": {"type": "string", "format": "binary"}}
                                            for t in sorted(set(_BUNDLE_MEDIA.values()))},
                                "description": "the file's bytes, as the manifest lists them"},
                          409: {"model": ErrorBody, "description": "the file no longer matches the manifest"}})
def ui_bundle_file(name: str, filename: str, m: ModelsDep) -> Response:
    """A media file of the bundle (a replay GIF, recorded steps), verified against the manifest's sha256."""
    service = m.get(name)
    media = _BUNDLE_MEDIA.get(Path(filename).suffix.lower())
    if media is None:
        raise ApiError(404, f"{filename!r}: only {', '.join(sorted(_BUNDLE_MEDIA))} files of a bundle are served")
    return Response(verified_file(service.runtime, filename), media_type=media,
                    headers={"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "default-src 'none'",
                             "Cache-Control": "no-cache"})


@ui_router.get("/stats", response_model=UiStats)
def ui_stats(request: Request, m: ModelsDep) -> Response:
    """Requests/s, p50/p99 latency (ms) and items/s over the last minute, and each model's queue depth."""
    live: LiveStats = request.app.state.web_stats
    body = live.read()
    body["queue_depth"] = {name: s.batcher.queued_items for name, s in m.services.items()}
    return json_response(body)


def mount_web(app: FastAPI, *, metrics: ServerMetrics, home: str | Path | None) -> None:
    """Serve the pages and their JSON from ``app`` (the registry at ``home`` gives stages and ship results)."""
    app.state.web_home = home
    app.state.web_stats = LiveStats(metrics)
    app.include_router(pages_router)
    app.include_router(ui_router)

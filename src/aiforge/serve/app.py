"""The app factory: any ASGI server can run ``create_app(...)``; ``serve`` runs it with uvicorn."""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import Response
from starlette.types import Receive, Scope, Send

from aiforge.bundle.format import read_manifest
from aiforge.bundle.registry import Registry
from aiforge.bundle.runtime import Runtime, available_cpus
from aiforge.errors import AiforgeError
from aiforge.serve.config import ApiKeys, ServerConfig
from aiforge.serve.connections import uvicorn_settings
from aiforge.serve.errors import install_error_handlers
from aiforge.serve.metrics import ServerMetrics
from aiforge.serve.middleware import (
    AccessLog,
    AllowHeader,
    BodyDeadline,
    BodyLimit,
    Decompress,
    JsonByDefault,
    KeyGate,
    RateLimit,
    TokenBuckets,
)
from aiforge.serve.preload import Preload
from aiforge.serve.protocols import PROBES, document_errors, health_router, v1_router, v2_router
from aiforge.serve.service import Models, ModelService
from aiforge.tasks.registry import KINDS, resolve

__all__ = ["create_app", "serve"]

log = logging.getLogger("aiforge.server")



def _load_all(models: Models, config: ServerConfig, home: str | Path | None, executor: ThreadPoolExecutor,
              metrics: ServerMetrics,
              preload: Preload | None) -> tuple[dict[str, ModelService[Runtime]], dict[str, str]]:
    """The services that loaded, and for each source that did not, why (one bad bundle spares the others).

    A source that ``preload`` loaded (``create_app`` checked it has these settings) is taken from it,
    already warmed up.
    """
    threads = config.threads or available_cpus()
    services: dict[str, ModelService[Runtime]] = {}
    errors: dict[str, str] = {}
    for source in models.sources:
        label = source.name if isinstance(source, Runtime) else str(source)
        try:
            rt = preload.take(source) if preload is not None and not isinstance(source, Runtime) else None
            warm = rt is not None
            if rt is None:
                rt = source if isinstance(source, Runtime) else Runtime.load(
                    source, precision=config.precision, home=home, threads=threads)
            if rt.name in services:
                raise AiforgeError(f"two bundles are named {rt.name!r}; serve one version per name")
            if not warm:
                rt.warmup()
            services[rt.name] = ModelService(rt, config=config, executor=executor, metrics=metrics)
        except Exception as exc:  # whatever a bundle raises while loading is reported, not fatal to the rest
            errors[label] = str(exc) or type(exc).__name__
    return services, errors


def _served_tasks(sources: Sequence[str | Path | Runtime], home: str | Path | None) -> set[str] | None:
    """The task of every source, from its manifest (not verified here: loading does that), or None when
    one cannot be read (then every kind's routes are included at once)."""
    tasks: set[str] = set()
    for source in sources:
        if isinstance(source, Runtime):
            tasks.add(source.manifest.task)
            continue
        try:
            tasks.add(read_manifest(Registry(home).resolve(source), verify=False).task)
        except AiforgeError:
            return None
    return tasks


class _KindRouters:
    """The routers of kinds no served model has, and the pages, imported and included when first needed.

    Importing them (pydantic models, their runtimes' modules, the pages' renderers) was a third of the
    server's start-up. They are included on the first request that no route matched, which is then
    routed again, so a model of another kind still gets the one wrong-kind 400, and the pages answer
    as if they had always been there; and before the OpenAPI schema is built.
    """

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.specs: list[str] = []  # routers, as "module:attribute"
        self.mounts: list[Callable[[FastAPI], None]] = []  # what includes the pages' routers
        self._lock = threading.Lock()

    @property
    def pending(self) -> bool:
        return bool(self.specs or self.mounts)

    def include(self) -> None:
        """Include every deferred router (once; later calls return at once)."""
        with self._lock:
            specs, self.specs = self.specs, []
            mounts, self.mounts = self.mounts, []
            for spec in specs:
                self.app.include_router(resolve(spec))
            for mount in mounts:
                mount(self.app)
            if specs or mounts:
                self.app.openapi_schema = None

    def install(self) -> None:
        """Route unmatched requests and the OpenAPI schema through :meth:`include`."""
        if not self.pending:
            return
        router, not_found, documented = self.app.router, self.app.router.default, self.app.openapi

        async def default(scope: Scope, receive: Receive, send: Send) -> None:
            if self.pending and scope["type"] == "http":
                self.include()
                await router(scope, receive, send)  # matched again, now with every kind's routes
            else:
                await not_found(scope, receive, send)

        def openapi() -> dict[str, Any]:
            self.include()
            return documented()

        router.default = default  # type: ignore[method-assign]
        self.app.openapi = openapi  # type: ignore[method-assign]


def _mount_web(app: FastAPI, *, metrics: ServerMetrics, home: str | Path | None) -> None:
    """The pages at / and their JSON under /v1/ui (serve/web/), included on first need."""
    from aiforge.serve.web.routes import mount_web  # lazy: the pages' renderers stay out of the start-up

    mount_web(app, metrics=metrics, home=home)


def create_app(bundles: Sequence[str | Path | Runtime], *, config: ServerConfig | None = None,
               home: str | Path | None = None, on_load_failure: Callable[[str], None] | None = None,
               preload: Preload | None = None) -> FastAPI:
    """A FastAPI app serving ``bundles`` (folders, ``NAME`` or ``NAME:VERSION``, or Runtimes).

    Models load in the background after start-up: liveness is true at once, readiness once
    every model is loaded and warmed up. A bundle that fails to load is reported with its error in
    ``/v2/health/ready`` and ``/v1/models`` (readiness stays false; the others still serve); when no
    model loads at all, ``on_load_failure`` is called with the reason (``serve`` stops and exits 1).
    ``preload`` (started before this module was imported, see :mod:`aiforge.serve.preload`) hands over
    the bundles it already loaded; it must have loaded with this config's precision and threads and
    this ``home``, since a second load of each bundle would cost more than the preload saved.

    Raises:
        AiforgeError: the API key file is missing or empty, or ``preload`` has other settings.
    """
    cfg = config or ServerConfig()
    if preload is not None:
        preload.check(precision=cfg.precision, threads=cfg.threads, home=home)
    metrics = ServerMetrics()
    models = Models(list(bundles))
    metrics.runtime_events.source = lambda: {s.name: s.runtime.counters() for s in models.services.values()}
    keys = ApiKeys.from_file(cfg.api_key_file) if cfg.api_key_file else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        executor = ThreadPoolExecutor(max_workers=available_cpus(), thread_name_prefix="aiforge-infer")

        async def load() -> None:
            services, errors = await asyncio.to_thread(_load_all, models, cfg, home, executor, metrics, preload)
            for service in services.values():
                service.batcher.start()
            models.finish(services, errors)
            for source, error in errors.items():
                log.error("loading %s failed: %s", source, error)
            if services:
                log.info("%s: %s", "ready" if models.ready else "serving, not ready",
                         ", ".join(f"{s.name}:{s.runtime.version}" for s in services.values()))
            elif on_load_failure is not None:
                on_load_failure("; ".join(f"{source}: {error}" for source, error in errors.items()))

        loader = asyncio.create_task(load())
        try:
            yield
        finally:
            loader.cancel()
            for service in models.services.values():
                await service.batcher.stop()
            executor.shutdown(wait=True)

    app = FastAPI(title="aiforge", summary="Pre-trained models served over standard inference protocols.",
                  lifespan=lifespan)
    app.state.models = models
    app.state.api_keys = keys
    app.state.config = cfg
    app.state.metrics = metrics
    install_error_handlers(app)
    app.include_router(health_router)
    app.include_router(v2_router)
    app.include_router(v1_router)
    # each kind's own routes (image upload, recommend, chat); torch-free at import. The served kinds'
    # are included now; the others on the first request no route matches (or for the OpenAPI schema).
    served = _served_tasks(models.sources, home)
    deferred = _KindRouters(app)
    for kind in KINDS:
        if kind.routes:
            if served is None or kind.name in served:
                app.include_router(resolve(kind.routes))
            else:
                deferred.specs.append(kind.routes)
    deferred.mounts.append(lambda web: _mount_web(web, metrics=metrics, home=home))

    @app.get("/metrics", include_in_schema=False)
    def prometheus() -> Response:
        for service in models.services.values():
            metrics.queue_depth.labels(model=service.name).set(service.batcher.queued_items)
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    document_errors(app)
    deferred.install()
    app.add_middleware(JsonByDefault)
    app.add_middleware(AllowHeader)
    app.add_middleware(Decompress, limit=cfg.max_body_bytes)  # inside BodyLimit: inflated bodies are limited too
    app.add_middleware(BodyLimit, limit=cfg.max_body_bytes)
    app.add_middleware(BodyDeadline, seconds=cfg.body_timeout_s)
    if not cfg.public_docs_metrics:
        operator_paths = {"/metrics", app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url}
        app.add_middleware(KeyGate, keys=keys, paths=frozenset(p for p in operator_paths if p))
    if cfg.rate_limit is not None:
        burst = cfg.rate_burst or max(1, math.ceil(cfg.rate_limit))
        app.add_middleware(RateLimit, buckets=TokenBuckets(rate=cfg.rate_limit, burst=burst), keys=keys,
                           metrics=metrics, exempt=PROBES | {"/metrics"})
    app.add_middleware(AccessLog, metrics=metrics, enabled=cfg.access_log)
    return app


def serve(bundles: Sequence[str | Path], *, config: ServerConfig | None = None,
          home: str | Path | None = None, log_level: str = "info", preload: Preload | None = None) -> None:
    """Serve ``bundles`` with uvicorn until SIGINT/SIGTERM (in-flight requests finish first).

    ``preload``: the bundles already loading in the background (``aiforge serve`` starts it first).

    Raises:
        AiforgeError: no model could be loaded (the server stops; the CLI exits 1 with the reason).
    """
    import uvicorn

    cfg = config or ServerConfig()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    failed: list[str] = []

    def stop(reason: str) -> None:  # no model loaded: a server that can never be ready should not stay up
        failed.append(reason)
        server.should_exit = True

    app = create_app(bundles, config=cfg, home=home, on_load_failure=stop, preload=preload)
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, **uvicorn_settings(cfg)))
    # uvicorn drains in-flight requests on SIGTERM, then re-raises the signal; exit 0 instead,
    # since a requested, graceful stop is a success.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.run()
    if failed:
        raise AiforgeError(f"no model could be loaded, so the server stopped: {failed[0]}")
    if not server.started:  # e.g. the port is taken; uvicorn.run exits 3 then too
        raise SystemExit(3)



"""The app factory: any ASGI server can run ``create_app(...)``; ``serve`` runs it with uvicorn."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import Response

from aiforge.bundle.runtime import Runtime
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
from aiforge.serve.protocols import PROBES, document_errors, health_router, v1_router, v2_router
from aiforge.serve.service import Models, ModelService
from aiforge.serve.web.routes import mount_web
from aiforge.tasks.registry import KINDS, resolve

__all__ = ["create_app", "serve"]

log = logging.getLogger("aiforge.server")



def _load_all(models: Models, config: ServerConfig, home: str | Path | None, executor: ThreadPoolExecutor,
              metrics: ServerMetrics) -> tuple[dict[str, ModelService[Runtime]], dict[str, str]]:
    """The services that loaded, and for each source that did not, why (one bad bundle spares the others)."""
    threads = config.threads or os.cpu_count() or 1
    services: dict[str, ModelService[Runtime]] = {}
    errors: dict[str, str] = {}
    for source in models.sources:
        label = source.name if isinstance(source, Runtime) else str(source)
        try:
            rt = source if isinstance(source, Runtime) else Runtime.load(
                source, precision=config.precision, home=home, threads=threads)
            if rt.name in services:
                raise AiforgeError(f"two bundles are named {rt.name!r}; serve one version per name")
            rt.warmup()
            services[rt.name] = ModelService(rt, config=config, executor=executor, metrics=metrics)
        except Exception as exc:  # whatever a bundle raises while loading is reported, not fatal to the rest
            errors[label] = str(exc) or type(exc).__name__
    return services, errors


def create_app(bundles: Sequence[str | Path | Runtime], *, config: ServerConfig | None = None,
               home: str | Path | None = None, on_load_failure: Callable[[str], None] | None = None) -> FastAPI:
    """A FastAPI app serving ``bundles`` (folders, ``NAME`` or ``NAME:VERSION``, or Runtimes).

    Models load in the background after start-up: liveness is true at once, readiness once
    every model is loaded and warmed up. A bundle that fails to load is reported with its error in
    ``/v2/health/ready`` and ``/v1/models`` (readiness stays false; the others still serve); when no
    model loads at all, ``on_load_failure`` is called with the reason (``serve`` stops and exits 1).

    Raises:
        AiforgeError: the API key file is missing or empty.
    """
    cfg = config or ServerConfig()
    metrics = ServerMetrics()
    models = Models(list(bundles))
    metrics.runtime_events.source = lambda: {s.name: s.runtime.counters() for s in models.services.values()}
    keys = ApiKeys.from_file(cfg.api_key_file) if cfg.api_key_file else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        executor = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="aiforge-infer")

        async def load() -> None:
            services, errors = await asyncio.to_thread(_load_all, models, cfg, home, executor, metrics)
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
    for kind in KINDS:  # each kind's own routes (image upload, recommend, chat); torch-free at import
        if kind.routes:
            app.include_router(resolve(kind.routes))
    mount_web(app, metrics=metrics, home=home)  # the pages at / and their JSON under /v1/ui (serve/web/)

    @app.get("/metrics", include_in_schema=False)
    def prometheus() -> Response:
        for service in models.services.values():
            metrics.queue_depth.labels(model=service.name).set(service.batcher.queued_items)
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    document_errors(app)
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
          home: str | Path | None = None, log_level: str = "info") -> None:
    """Serve ``bundles`` with uvicorn until SIGINT/SIGTERM (in-flight requests finish first).

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

    app = create_app(bundles, config=cfg, home=home, on_load_failure=stop)
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, **uvicorn_settings(cfg)))
    # uvicorn drains in-flight requests on SIGTERM, then re-raises the signal; exit 0 instead,
    # since a requested, graceful stop is a success.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.run()
    if failed:
        raise AiforgeError(f"no model could be loaded, so the server stopped: {failed[0]}")
    if not server.started:  # e.g. the port is taken; uvicorn.run exits 3 then too
        raise SystemExit(3)



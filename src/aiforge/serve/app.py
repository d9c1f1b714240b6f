"""The app factory: any ASGI server can run ``create_app(...)``; ``serve`` runs it with uvicorn."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import Response

from aiforge.bundle.runtime import Runtime
from aiforge.serve.config import ApiKeys, ServerConfig
from aiforge.serve.connections import uvicorn_settings
from aiforge.serve.errors import install_error_handlers
from aiforge.serve.metrics import ServerMetrics
from aiforge.serve.middleware import (
    AccessLog,
    AllowHeader,
    BodyDeadline,
    BodyLimit,
    JsonByDefault,
    KeyGate,
    RateLimit,
    TokenBuckets,
)
from aiforge.serve.protocols import PROBES, document_errors, health_router, v1_router, v2_router
from aiforge.serve.service import Models, ModelService
from aiforge.tasks.registry import KINDS, resolve

__all__ = ["create_app", "serve"]

log = logging.getLogger("aiforge.server")



def _load_all(models: Models, config: ServerConfig, home: str | Path | None, executor: ThreadPoolExecutor,
              metrics: ServerMetrics) -> dict[str, ModelService[Runtime]]:
    threads = config.threads or os.cpu_count() or 1
    services: dict[str, ModelService[Runtime]] = {}
    for source in models.sources:
        rt = source if isinstance(source, Runtime) else Runtime.load(
            source, precision=config.precision, home=home, threads=threads)
        if rt.name in services:
            raise ValueError(f"two bundles are named {rt.name!r}; serve one version per name")
        rt.warmup()
        services[rt.name] = ModelService(rt, config=config, executor=executor, metrics=metrics)
    return services


def create_app(bundles: Sequence[str | Path | Runtime], *, config: ServerConfig | None = None,
               home: str | Path | None = None) -> FastAPI:
    """A FastAPI app serving ``bundles`` (folders, ``NAME`` or ``NAME:VERSION``, or Runtimes).

    Models load in the background after start-up: liveness is true at once, readiness once
    every model is loaded and warmed up.

    Raises:
        AiforgeError: the API key file is missing or empty.
    """
    cfg = config or ServerConfig()
    metrics = ServerMetrics()
    models = Models(list(bundles))
    keys = ApiKeys.from_file(cfg.api_key_file) if cfg.api_key_file else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        executor = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="aiforge-infer")

        async def load() -> None:
            try:
                services = await asyncio.to_thread(_load_all, models, cfg, home, executor, metrics)
            except Exception as exc:  # readiness stays false; the reason is logged and listed
                models.error = str(exc)
                log.error("loading models failed: %s", exc)
                return
            for service in services.values():
                service.batcher.start()
            models.services = services
            models.ready = True
            log.info("ready: %s", ", ".join(f"{s.name}:{s.runtime.version}" for s in services.values()))

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

    @app.get("/metrics", include_in_schema=False)
    def prometheus() -> Response:
        for service in models.services.values():
            metrics.queue_depth.labels(model=service.name).set(service.batcher.queued_items)
            for counter, value in service.runtime.counters().items():
                metrics.runtime_counts.labels(model=service.name, counter=counter).set(value)
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    document_errors(app)
    app.add_middleware(JsonByDefault)
    app.add_middleware(AllowHeader)
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
    """Serve ``bundles`` with uvicorn until SIGINT/SIGTERM (in-flight requests finish first)."""
    import uvicorn

    cfg = config or ServerConfig()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    app = create_app(bundles, config=cfg, home=home)
    # uvicorn drains in-flight requests on SIGTERM, then re-raises the signal; exit 0 instead,
    # since a requested, graceful stop is a success.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(app, log_level=log_level, **uvicorn_settings(cfg))



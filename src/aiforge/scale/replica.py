"""The Ray Serve deployment of one bundle: the in-process server's own app, in every replica.

Each replica loads the bundle (manifest and checksums verified, torch-free Runtime) and serves it with
:func:`aiforge.serve.app.create_app`, so the routes, limits, error bodies, batcher and ``/metrics`` are
the in-process server's, byte for byte. The only addition is the ``x-aiforge-replica`` header naming
the replica that answered. With the default ``proxy`` ingress Ray's Python proxy parses each request and
hands it to a replica by an actor call; with ``haproxy`` (Ray's direct ingress behind HAProxy) the
replica's own HTTP server runs this app, so a request is parsed once, in the replica, as in-process.
Batching stays the server's own :class:`~aiforge.serve.batching.Batcher` (per-item failure isolation,
queue bound with 503 + Retry-After); ``bench/scale.py`` measures it against ``@serve.batch``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ray import serve
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aiforge.bundle.runtime import Runtime
from aiforge.serve.app import create_app
from aiforge.serve.config import ServerConfig

__all__ = ["REPLICA_HEADER", "BundleReplica", "ReplicaHeader"]

REPLICA_HEADER = "x-aiforge-replica"


class ReplicaHeader:
    """ASGI middleware: every HTTP response carries ``x-aiforge-replica: <deployment>#<replica id>``."""

    def __init__(self, app: ASGIApp, *, replica: str) -> None:
        self.app = app
        self.header = (REPLICA_HEADER.encode(), replica.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, tagged)


@serve.ingress()
class BundleReplica:
    """One replica: a verified Runtime served by ``create_app`` (its app is built at replica start)."""

    # Ray Serve awaits an async constructor (loading runs off the replica's event loop).
    async def __init__(self, bundle: str, config: dict[str, Any]) -> None:  # type: ignore[misc]
        self.config = ServerConfig(**config)
        self.runtime = await asyncio.to_thread(Runtime.load, bundle, precision=self.config.precision,
                                               threads=self.config.threads)
        await asyncio.to_thread(self.runtime.warmup)
        self.replica = serve.get_replica_context().replica_id.to_full_id_str()

    def __serve_build_asgi_app__(self) -> ASGIApp:
        self.served = create_app([self.runtime], config=self.config)
        self.served.add_middleware(ReplicaHeader, replica=self.replica)
        return self.served

    def check_health(self) -> None:
        """Healthy once loading finished with the bundle served (Ray replaces a replica that raises)."""
        models = self.served.state.models
        if models.loaded and not models.services:
            raise RuntimeError(f"the bundle failed to load: {models.errors}")


def build_app(args: dict[str, Any]) -> Any:
    """The Serve application of a config file (``import_path: aiforge.scale.replica:build_app``, as KubeRay uses).

    ``args``: ``name`` (the deployment's, the bundle's name), ``bundle`` (a folder in the image) and
    ``config`` (ServerConfig fields).
    """
    deployment = serve.deployment(name=str(args["name"]))(BundleReplica)
    return deployment.bind(str(args["bundle"]), dict(args.get("config") or {}))

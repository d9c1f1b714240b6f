"""A middleware for Ray Serve's HTTP proxy: a request lost with its replica is a retryable 503, not a 500.

When a replica dies (its process killed, its node lost) the requests it held fail inside the proxy,
which sends no answer for them (the HTTP server then answers 500 in plain text); and a deployment with
no live replica answers 503 without Retry-After. Both are the server's transient state, not the client's
fault, so this turns them into
``503 {"error": ...}`` with ``Retry-After``. The app's own errors are JSON and pass unchanged.
Ray loads it in each proxy from ``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``,
which :func:`aiforge.scale.cluster.connect` sets for a cluster it starts; set it yourself for one started
with ``ray start``.
"""

from __future__ import annotations

import json

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["RetryableReplicaLoss", "middlewares"]

_BODY = json.dumps({"error": "the replica serving this request stopped; retry it"}).encode()


class RetryableReplicaLoss:
    """ASGI middleware: Ray's own (non-JSON) 500s become 503 + Retry-After; 503s get Retry-After."""

    def __init__(self, app: ASGIApp, *, retry_after_s: int = 1) -> None:
        self.app = app
        self.retry_after = str(retry_after_s).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        replaced = started = False

        async def rewrite(message: Message) -> None:
            nonlocal replaced, started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                json_body = any(k.lower() == b"content-type" and v.startswith(b"application/json") for k, v in headers)
                if message["status"] == 500 and not json_body:
                    replaced = True
                    await self._unavailable(send, body=False)
                    return
                if message["status"] == 503 and b"retry-after" not in names:
                    message = {**message, "headers": [*headers, (b"retry-after", self.retry_after)]}
            elif message["type"] == "http.response.body" and replaced:
                if not message.get("more_body", False):
                    await send({"type": "http.response.body", "body": _BODY, "more_body": False})
                return
            await send(message)

        await self.app(scope, receive, rewrite)
        if not started:  # the proxy sends nothing for a request lost with its replica (uvicorn would answer 500)
            await self._unavailable(send, body=True)

    async def _unavailable(self, send: Send, *, body: bool) -> None:
        await send({"type": "http.response.start", "status": 503, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(_BODY)).encode()),
            (b"retry-after", self.retry_after)]})
        if body:
            await send({"type": "http.response.body", "body": _BODY, "more_body": False})


def middlewares() -> list[Middleware]:
    """What Ray's proxy callback returns: the middlewares to wrap the proxy's HTTP handling with."""
    return [Middleware(RetryableReplicaLoss)]

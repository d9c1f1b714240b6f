"""Pure ASGI middleware: body-size limit (413), body read deadline (408), API keys on the
operator routes (401), per-client rate limits (429) and a JSON access log with metrics."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import re
import time
import zlib
from dataclasses import dataclass
from typing import Any

from starlette.exceptions import HTTPException
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aiforge.serve.config import ApiKeys, presented_key
from aiforge.serve.errors import error_body, is_openai_path, openai_status
from aiforge.serve.metrics import ServerMetrics

__all__ = ["AccessLog", "AllowHeader", "BodyDeadline", "BodyLimit", "Decompress", "JsonByDefault", "KeyGate",
           "RateLimit",
           "TokenBuckets"]

access_logger = logging.getLogger("aiforge.access")


async def _send_json(send: Send, status: int, body: dict[str, Any],
                     headers: list[tuple[bytes, bytes]] | None = None) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": payload})


async def _send_error(send: Send, scope: Scope, status: int, message: str,
                      headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """An error answered by a middleware, in the shape of the route's protocol (OpenAI's on OpenAI routes)."""
    path = str(scope.get("path", ""))
    if is_openai_path(path):
        status = openai_status(status)
    await _send_json(send, status, error_body(path, status, message), headers)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _scope_key(scope: Scope) -> str | None:
    return presented_key(authorization=_header(scope, b"authorization"), x_api_key=_header(scope, b"x-api-key"))


class _TrackedSend:
    """``send`` that remembers whether the response has started (after that no error answer can follow)."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.started = False

    async def __call__(self, msg: Message) -> None:
        if msg["type"] == "http.response.start":
            self.started = True
        await self.send(msg)


class _TooLarge(HTTPException):
    """Raised while the body streams in; FastAPI passes HTTPException through as 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over the {limit}-byte limit")


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, by header or while streaming."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"request body over the {self.limit}-byte limit"
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await _send_error(send, scope, 413, message)
                return
        seen = 0
        tracked = _TrackedSend(send)

        async def limited() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge(self.limit)
            return msg

        try:
            await self.app(scope, limited, tracked)
        except _TooLarge:
            if not tracked.started:
                await _send_error(send, scope, 413, message)


class AccessLog:
    """One JSON line per request (never the body) and the request metrics."""

    def __init__(self, app: ASGIApp, *, metrics: ServerMetrics, enabled: bool = True) -> None:
        self.app = app
        self.metrics = metrics
        self.enabled = enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def capture(msg: Message) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = int(msg["status"])
            await send(msg)

        try:
            await self.app(scope, receive, capture)
        finally:
            elapsed = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.labels(route=route, status=str(status)).inc()
            self.metrics.latency.labels(route=route).observe(elapsed)
            if self.enabled:
                client = scope.get("client")
                access_logger.info(json.dumps({
                    "ts": round(time.time(), 3), "method": scope.get("method"), "path": scope.get("path"),
                    "route": route, "status": status, "ms": round(elapsed * 1000, 2),
                    "client": client[0] if client else None,
                }))


class JsonByDefault:
    """Treat a POST body sent without a JSON content type (``curl -d``) as JSON."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") == "POST":
            headers = [(k, v) for k, v in scope.get("headers", []) if k != b"content-type"]
            ctype = dict(scope.get("headers", [])).get(b"content-type", b"")
            if b"json" not in ctype and not ctype.startswith(b"multipart/"):
                scope = dict(scope, headers=[*headers, (b"content-type", b"application/json")])
        await self.app(scope, receive, send)


class _BodyTimedOut(HTTPException):
    """Raised from ``receive`` when the body is not in by its deadline; FastAPI passes it through as 408."""

    def __init__(self, seconds: float) -> None:
        super().__init__(408, f"request body not received within {seconds:g} s",
                         headers={"Connection": "close"})


class BodyDeadline:
    """Refuse a request whose body has not fully arrived ``seconds`` after the request began (408).

    Only the body is timed: once it is in, ``receive`` passes through untouched, so a long answer
    (a chat stream waiting for the client to leave) is never cut by this deadline.
    """

    def __init__(self, app: ASGIApp, *, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = time.monotonic() + self.seconds
        body_done = False
        tracked = _TrackedSend(send)

        async def timed() -> Message:
            nonlocal body_done
            if body_done:
                return await receive()
            try:
                msg = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise _BodyTimedOut(self.seconds) from None
            if msg["type"] != "http.request" or not msg.get("more_body", False):
                body_done = True
            return msg

        try:
            await self.app(scope, timed, tracked)
        except _BodyTimedOut as exc:  # raised outside FastAPI's handlers (a route reading the body itself)
            if not tracked.started:
                await _send_error(send, scope, 408, str(exc.detail), [(b"connection", b"close")])


class KeyGate:
    """When the server has API keys, ``paths`` (the operator routes: metrics, docs, schema) need one too."""

    def __init__(self, app: ASGIApp, *, keys: ApiKeys | None, paths: frozenset[str]) -> None:
        self.app = app
        self.keys = keys
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and self.keys is not None and scope.get("path") in self.paths
                and not self.keys.check(_scope_key(scope))):
            await _send_error(send, scope, 401, "missing or invalid API key (send Authorization: Bearer KEY)",
                             [(b"www-authenticate", b"Bearer")])
            return
        await self.app(scope, receive, send)


class _SchemaPaths:
    """The app's documented path templates, compiled once on first use (the app is complete by then)."""

    def __init__(self) -> None:
        self._paths: list[tuple[str, re.Pattern[str], frozenset[str]]] | None = None

    def lookup(self, scope: Scope) -> tuple[str, frozenset[str]] | None:
        """The template ``scope``'s path matches and the methods documented for it, or None."""
        if self._paths is None:
            openapi = getattr(scope.get("app"), "openapi", None)
            paths = openapi().get("paths", {}) if callable(openapi) else {}
            self._paths = [(path, compile_path(path)[0], frozenset(m.upper() for m in item))
                           for path, item in paths.items()]
        path = str(scope.get("path", ""))
        return next(((t, methods) for t, regex, methods in self._paths if regex.match(path)), None)


class AllowHeader:
    """A 405's ``Allow`` lists every method of the path: Starlette names only the first route that
    matched it, so a path served by two routes (GET and DELETE of a session) answered ``Allow: GET``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.paths = _SchemaPaths()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def fixing_send(msg: Message) -> None:
            if msg["type"] == "http.response.start" and msg["status"] == 405:
                found = self.paths.lookup(scope)
                if found is not None:
                    allow = ", ".join(sorted(found[1])).encode()
                    headers = [(k, v) for k, v in msg.get("headers", []) if k.lower() != b"allow"]
                    msg = {**msg, "headers": [*headers, (b"allow", allow)]}
            await send(msg)

        await self.app(scope, receive, fixing_send)


@dataclass
class _Bucket:
    tokens: float
    at: float


class TokenBuckets:
    """One token bucket per client: ``burst`` requests at once, refilled at ``rate`` per second.

    Buckets that have refilled to full are dropped when the table grows past ``max_clients``
    (a full bucket is the same as a new one), so many one-off clients cannot grow it without bound.
    """

    def __init__(self, *, rate: float, burst: int, max_clients: int = 10_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self._buckets: dict[str, _Bucket] = {}

    def take(self, client: str, now: float | None = None) -> float:
        """Take one token for ``client``: 0.0 when granted, else the seconds until one is available."""
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) >= self.max_clients:
                self._prune(now)
            bucket = self._buckets[client] = _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def _prune(self, now: float) -> None:
        full = [c for c, b in self._buckets.items() if b.tokens + (now - b.at) * self.rate >= self.burst]
        for client in full:
            del self._buckets[client]
        if len(self._buckets) >= self.max_clients:  # all busy: forget the longest idle half
            for client in sorted(self._buckets, key=lambda c: self._buckets[c].at)[: self.max_clients // 2]:
                del self._buckets[client]


class RateLimit:
    """Per-client rate limit (429 + Retry-After); a client is its valid API key, else its address.

    ``exempt`` paths (health probes, the metrics scrape) are never limited. Refusals are counted
    in ``aiforge_rate_limited_total`` by route.
    """

    def __init__(self, app: ASGIApp, *, buckets: TokenBuckets, keys: ApiKeys | None, metrics: ServerMetrics,
                 exempt: frozenset[str]) -> None:
        self.app = app
        self.buckets = buckets
        self.keys = keys
        self.metrics = metrics
        self.exempt = exempt
        self.paths = _SchemaPaths()

    def _client(self, scope: Scope) -> str:
        key = _scope_key(scope)
        if key is not None and self.keys is not None and self.keys.check(key):
            return "key:" + hashlib.sha256(key.encode()).hexdigest()  # one bucket per key, never the key
        client = scope.get("client")
        return "addr:" + (client[0] if client else "unknown")

    def _route(self, scope: Scope) -> str:
        """The documented path template the request is for (a bounded label), or ``unmatched``."""
        found = self.paths.lookup(scope)
        return found[0] if found else "unmatched"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in self.exempt:
            await self.app(scope, receive, send)
            return
        wait = self.buckets.take(self._client(scope))
        if wait > 0:
            self.metrics.rate_limited.labels(route=self._route(scope)).inc()
            retry = str(max(1, math.ceil(wait)))
            await _send_error(send, scope, 429, f"rate limit of {self.buckets.rate:g} requests/s (burst "
                                                     f"{self.buckets.burst}) exceeded; retry in {retry} s",
                             [(b"retry-after", retry.encode())])
            return
        await self.app(scope, receive, send)


class Decompress:
    """Inflate a ``Content-Encoding: gzip`` or ``deflate`` request body (tritonclient's
    ``request_compression_algorithm``) before the routes read it.

    The inflated body must fit in ``limit`` bytes too (a compressed bomb is a 413, found without
    inflating more than ``limit + 1`` bytes); a body that does not inflate is a 400, another
    encoding a 415. Sits inside :class:`BodyLimit`, which limits the bytes on the wire.
    """

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        encoding = (_header(scope, b"content-encoding") or "identity").strip().lower() \
            if scope["type"] == "http" else "identity"
        if encoding == "identity":
            await self.app(scope, receive, send)
            return
        if encoding not in ("gzip", "x-gzip", "deflate"):
            await _send_error(send, scope, 415, f"Content-Encoding {encoding!r} is not supported; send gzip, "
                                                "deflate or an uncompressed body")
            return
        chunks = []
        while True:
            msg = await receive()
            if msg["type"] != "http.request":
                return  # the client left
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body", False):
                break
        # gzip: a gzip header (wbits 16+15); deflate: zlib-wrapped as RFC 9110 says, or raw as some clients send
        raw = b"".join(chunks)
        attempts = (16 + zlib.MAX_WBITS,) if encoding != "deflate" else (zlib.MAX_WBITS, -zlib.MAX_WBITS)
        body: bytes | None = None
        for wbits in attempts:
            inflater = zlib.decompressobj(wbits)
            try:
                body = inflater.decompress(raw, self.limit + 1)
            except zlib.error:
                continue
            if len(body) > self.limit or inflater.unconsumed_tail:
                await _send_error(send, scope, 413, f"request body over the {self.limit}-byte limit once "
                                                    f"inflated ({encoding})")
                return
            if not inflater.eof:
                body = None  # truncated stream
                continue
            break
        if body is None:
            await _send_error(send, scope, 400, f"request body is not valid {encoding} data (Content-Encoding: "
                                                f"{encoding})")
            return
        headers = [(k, v) for k, v in scope.get("headers", []) if k not in (b"content-encoding", b"content-length")]
        headers.append((b"content-length", str(len(body)).encode()))
        delivered = False

        async def inflated() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(dict(scope, headers=headers), inflated, send)

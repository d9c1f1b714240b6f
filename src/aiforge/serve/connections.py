"""uvicorn's HTTP protocol with the connection limits uvicorn itself lacks.

uvicorn times out only idle keep-alive connections: a client that opens a socket and sends its
headers a byte at a time holds a connection (and its memory) for as long as it likes, and with
httptools the header size is not bounded. :func:`guarded_protocol` makes a subclass of uvicorn's
httptools protocol (the one ``uvicorn[standard]`` runs) that

- answers 408 and closes when a request's headers are not complete ``header_timeout_s`` after its
  first byte (or after the connection opened, for a connection that sends nothing);
- answers 431 and closes when incomplete headers pass ``max_header_bytes``;
- answers 503 with ``Retry-After`` (JSON, like every other refusal) to a connection over
  ``max_connections``; uvicorn's own ``limit_concurrency`` answers a plain-text 503 without one. The
  answer waits for the request line (at most ``OVER_CAP_WAIT_S``) to learn the path, so that an
  OpenAI route gets OpenAI's error shape; a connection that sends nothing by then gets the v2 shape;
- writes every refusal in the shape of the route the request line names (:func:`aiforge.serve.errors.error_body`:
  OpenAI's ``{"error": {"message", "type", "param", "code"}}`` on the OpenAI routes, ``{"error": "..."}`` elsewhere);
- closes a connection whose request body is still arriving (a 413 by ``Content-Length``, a 408 for a slow
  body, any answer given before the body was read) by lingering: it half-closes, then drops what the client
  still sends for up to ``LINGER_S`` before closing. uvicorn closes at once, and a close with unread data
  makes the kernel send a reset, which discards the answer the client had not read yet.

The body's own deadline is :class:`aiforge.serve.middleware.BodyDeadline`.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiforge.serve.config import ServerConfig
from aiforge.serve.errors import error_body

__all__ = ["guarded_protocol", "uvicorn_settings"]

LINGER_S = 1.0  # after refusing a request, how long its connection still reads (and drops) before closing
OVER_CAP_WAIT_S = 0.25  # how long a connection over the cap may take to send its request line (for its path)
_REQUEST_LINE_BYTES = 8192  # what is read of an over-the-cap connection to find its request line


def _raw_response(status: int, reason: str, error: str, extra: str = "", *, path: str = "") -> bytes:
    body = json.dumps(error_body(path, status, error), ensure_ascii=True).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"connection: close\r\n{extra}\r\n")
    return head.encode("latin-1") + body


class _LingeringClose:
    """The transport a request cycle writes to, whose ``close`` is the protocol's lingering close."""

    def __init__(self, transport: asyncio.Transport, close: Any) -> None:
        self._transport = transport
        self.close = close

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _base_protocol() -> type[asyncio.Protocol] | None:
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # uvicorn without httptools: h11, whose own event-size limit bounds the headers
        return None
    return HttpToolsProtocol


def guarded_protocol(config: ServerConfig) -> type[asyncio.Protocol] | str:
    """A uvicorn HTTP protocol class (for ``uvicorn.run(http=...)``) applying ``config``'s connection limits;
    ``"h11"`` (uvicorn's own, unguarded but for its header size limit) where httptools is missing."""
    base: Any = _base_protocol()
    if base is None:
        return "h11"
    header_timeout = config.header_timeout_s
    max_header_bytes = config.max_header_bytes
    max_connections = config.max_connections

    class GuardedProtocol(base):  # type: ignore[misc, valid-type]
        """uvicorn's httptools protocol; the parser calls ``on_message_begin`` at a request's first byte
        and ``on_headers_complete`` when its headers are in: the span these limits watch."""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            self._header_timer: asyncio.TimerHandle | None = None
            self._in_headers = False
            self._began = False
            self._header_bytes = 0
            self._lingering = False
            self._over_cap: bytearray | None = None
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                self._over_cap = bytearray()  # refused once its request line (its path) is in, or soon anyway
                self._header_timer = self.loop.call_later(OVER_CAP_WAIT_S, self._refuse_over_cap)
                return
            self._arm()  # a connection that never sends a byte is cut off too

        def _refuse_over_cap(self, path: str = "") -> None:
            self._header_timer = None
            self._refuse(503, "Service Unavailable",
                         f"{max_connections} connections open, the server's limit; retry shortly",
                         "retry-after: 1\r\n", path=path)

        def _path(self) -> str:
            """The path of the request whose headers are arriving (uvicorn collects its URL in ``url``)."""
            url = bytes(getattr(self, "url", b"") or b"")
            return url.split(b"?", 1)[0].decode("latin-1")

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(header_timeout, self._headers_late)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _refuse(self, status: int, reason: str, error: str, extra: str = "", *, path: str | None = None) -> None:
            """Answer, then linger: discard what the client still sends for a moment before closing,
            so its kernel does not drop the answer on a reset (a close with unread data sends one)."""
            self._disarm()
            if self.transport.is_closing() or self._lingering:
                return
            self._lingering = True
            self.transport.write(_raw_response(status, reason, error, extra,
                                               path=self._path() if path is None else path))
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self.loop.call_later(LINGER_S, self.transport.close)

        def _close_lingering(self) -> None:
            """What the request cycle's ``transport.close()`` does: linger while the body is unread."""
            cycle = self.cycle
            if cycle is not None and cycle.more_body and not self._lingering and not self.transport.is_closing():
                self._disarm()
                self._lingering = True
                if self.transport.can_write_eof():
                    self.transport.write_eof()
                self.loop.call_later(LINGER_S, self.transport.close)
                return
            self.transport.close()

        def _headers_late(self) -> None:
            self._header_timer = None
            if self._in_headers or self.cycle is None:
                self._refuse(408, "Request Timeout", f"request headers not received within {header_timeout:g} s")

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_headers = True
            self._began = True
            self._header_bytes = 0
            self._arm()

        def on_headers_complete(self) -> None:
            self._in_headers = False
            self._disarm()
            super().on_headers_complete()
            if self.cycle is not None:
                self.cycle.transport = _LingeringClose(self.transport, self._close_lingering)

        def data_received(self, data: bytes) -> None:
            if self._lingering:
                return
            if self._over_cap is not None:  # never parsed: only its request line is looked for
                self._over_cap += data[:_REQUEST_LINE_BYTES]
                line, found, _ = bytes(self._over_cap).partition(b"\r\n")
                if found or len(self._over_cap) >= _REQUEST_LINE_BYTES:
                    self._disarm()
                    parts = line.split(b" ")
                    target = parts[1] if len(parts) >= 2 else b""
                    self._refuse_over_cap(target.split(b"?", 1)[0].decode("latin-1"))
                return
            # A chunk counts when the headers are still incomplete after it. A chunk in which a request
            # began may also hold the previous request's body tail: counted whole, it can overstate the
            # headers by that tail, and only when the next request's headers straddle two chunks.
            self._began = False
            was_in_headers = self._in_headers
            super().data_received(data)
            if (was_in_headers or self._began) and self._in_headers and not self.transport.is_closing():
                self._header_bytes += len(data)
                if self._header_bytes > max_header_bytes:
                    self._refuse(431, "Request Header Fields Too Large",
                                 f"request headers over the {max_header_bytes}-byte limit")

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return GuardedProtocol


def uvicorn_settings(config: ServerConfig) -> dict[str, Any]:
    """The keyword arguments of ``uvicorn.run``/``uvicorn.Config`` for ``config``'s address and limits."""
    # ws "none": no route takes a WebSocket, and uvicorn's automatic choice imports the websockets package
    return {"host": config.host, "port": config.port, "http": guarded_protocol(config), "ws": "none",
            "access_log": False,
            "timeout_keep_alive": config.keep_alive_s, "h11_max_incomplete_event_size": config.max_header_bytes,
            "timeout_graceful_shutdown": 30, "server_header": False}

"""Chat answers in flight: the admission gate, one worker thread per answer, and an SSE response that always
ends its answer, however the client leaves.

Why not a bare ``StreamingResponse``: when a client hangs up, Starlette cancels the task sending the body
and never closes the body's async generator, so the clean-up in that generator's ``finally`` (give the
slot back, log the turn, stop the generation) could be skipped for good; 64 abandoned streams then locked
chat out with 503s until a restart. Here every clean-up step is synchronous (nothing a cancellation can
interrupt), the response closes its generator itself, and the blocking generation runs in a thread that
stops at its next piece once nobody reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterator
from typing import Any

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from aiforge.serve.errors import ApiError

__all__ = ["Admission", "EventStream", "PiecePump", "Slot"]


log = logging.getLogger("aiforge.chat")


class Slot:
    """One admitted answer; :meth:`release` gives the slot back (once, however often it is called)."""

    def __init__(self, gate: Admission) -> None:
        self._gate: Admission | None = gate

    def release(self) -> None:
        gate, self._gate = self._gate, None
        if gate is not None:
            gate.release_one()


class Admission:
    """Bounds the chat answers in flight (they bypass the batcher).

    A request over the bound waits up to ``wait_s`` for a slot, first come first served, with at most
    ``max_waiting`` waiting (``limit`` by default): a burst a little over capacity, or one that arrives
    while the server is still noticing clients that left, is answered late instead of refused. Past that
    wait, or that queue: 503 + ``Retry-After``, so the queue stays bounded. Used from the event loop only,
    so the counts need no lock.
    """

    def __init__(self, limit: int, *, wait_s: float = 0.0, max_waiting: int | None = None) -> None:
        self.limit = limit
        self.wait_s = wait_s
        self.max_waiting = limit if max_waiting is None else max_waiting
        self.active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return sum(1 for f in self._waiters if not f.done())

    def _refuse(self) -> ApiError:
        return ApiError(503, f"{self.active} chat answers in flight and {self.waiting} waiting, the server's "
                             "limit; retry shortly", headers={"Retry-After": "1"})

    async def acquire(self) -> Slot:
        """A slot for one answer, waiting up to ``wait_s`` for one.

        Raises:
            ApiError: 503 when no slot freed within ``wait_s``, or ``max_waiting`` requests already wait.
        """
        if self.active < self.limit and not self.waiting:
            self.active += 1
            return Slot(self)
        if self.wait_s <= 0 or self.waiting >= self.max_waiting:
            raise self._refuse()
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(turn)
        try:
            await asyncio.wait_for(turn, self.wait_s)
        except TimeoutError:
            raise self._refuse() from None
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # handed a slot just as the client left: pass it on
                self.release_one()
            raise
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(turn)
        return Slot(self)  # the releasing answer handed its slot over: ``active`` is unchanged

    def release_one(self) -> None:
        """Give one slot back: to the longest waiting request, else to the pool."""
        while self._waiters:
            turn = self._waiters.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self.active -= 1


_END = object()


class PiecePump:
    """Runs a blocking iterator of answer pieces in its own thread; the event loop awaits the pieces.

    :meth:`stop` makes the thread quit after the piece it is computing and close the iterator there (a
    generator cannot be closed from another thread while it runs), which stops a local generation or
    an upstream request. The queue needs no bound: an answer is at most ``max_tokens`` pieces.
    """

    def __init__(self, pieces: Iterator[str]) -> None:
        self._pieces = pieces
        self._stop = threading.Event()
        self.closed = threading.Event()  # set once the iterator is closed (tests wait on it)
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the worker thread (call from the event loop)."""
        if self._thread is None:
            self._loop = asyncio.get_running_loop()
            self._thread = threading.Thread(target=self._run, name="aiforge-chat-answer", daemon=True)
            self._thread.start()

    async def next(self, timeout: float) -> str | None:
        """The next piece, or None at the end of the answer.

        Raises:
            TimeoutError: no piece within ``timeout`` seconds.
            Exception: whatever the iterator raised (a ``GenerationError``, say).
        """
        self.start()
        item = await asyncio.wait_for(self._queue.get(), max(timeout, 0.0))
        if item is _END:
            return None
        if isinstance(item, BaseException):
            raise item
        return str(item)

    def stop(self) -> None:
        """Ask the worker to stop at its next piece (it closes the iterator then); returns at once."""
        self._stop.set()
        if self._thread is None:  # never started: close here, nobody else runs the iterator
            self._close()

    def _put(self, item: object) -> None:
        loop = self._loop
        try:
            if loop is not None:
                loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the event loop is gone (server shut down): nobody will read this
            self._stop.set()

    def _run(self) -> None:
        try:
            for piece in self._pieces:
                if self._stop.is_set():
                    return
                self._put(piece)
            self._put(_END)
        except Exception as exc:  # handed to the reader, which raises it in the event loop
            self._put(exc)
        finally:
            self._close()

    def _close(self) -> None:
        close: Callable[[], object] | None = getattr(self._pieces, "close", None)
        try:
            if close is not None:
                close()
        except Exception:  # closing must never fail an answer that is already over
            log.exception("closing a chat answer failed")
        finally:
            self.closed.set()


class EventStream(StreamingResponse):
    """Server-sent events whose generator is closed and ``on_close`` called when the response ends, whether
    it was sent in full, the client hung up, or the server is shutting down."""

    def __init__(self, events: AsyncGenerator[str, None], *, on_close: Callable[[], None],
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(events, media_type="text/event-stream", headers=headers)
        self._events = events
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                with anyio.CancelScope(shield=True):  # run the generator's finally even when cancelled
                    await self._events.aclose()
            finally:
                self._on_close()

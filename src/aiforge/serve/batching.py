"""The dynamic batcher: one future per request, batches of up to ``max_batch_size`` items.

Contract (after Ray Serve's ``@serve.batch``):
- a batch closes when it holds ``max_batch_size`` items or ``max_wait_ms`` after its first
  item arrived (monotonic clock), whichever is first; items, not requests, are counted, and a
  request is never split: one larger than ``max_batch_size`` runs as a batch of its own;
- the wait applies only while another batch is running: an idle model takes what is queued
  at once (waiting could only add latency), a busy one lets the next batch fill up;
- the queue is bounded in items: a request that would overflow it fails at once with
  :class:`Overloaded` (the server answers 503 + Retry-After) instead of waiting;
- cancelled requests (client gone, timeout) are dropped before their batch runs;
- the model's output length is checked against the input length (:class:`BatchLengthError`
  otherwise), and every request gets an answer or an error, never a hang;
- one bad item never fails the requests batched with it: a failed batch of several requests is
  run again in halves, down to single requests, so only the request whose items fail gets the
  error (its own: an ``InputError`` stays a client error) and the others get their outputs.
  Runtimes still validate each item in ``parse_items`` first; this is the backstop for what only
  the model finds out.

The hook is ``Runtime.run_batch``: one output per item, any sequence (a classifier's array of
probability rows, a recommender's list of rankings); each request gets its slice of it.
Batches run in a thread pool so the event loop keeps accepting requests; texts inside a
batch are grouped by token length by the Runtime so padding stays small.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BatchLengthError", "Batcher", "BatcherStats", "Overloaded"]


class Overloaded(Exception):
    """The queue is full; retry after ``retry_after`` seconds."""

    def __init__(self, queued: int, limit: int, retry_after: float) -> None:
        super().__init__(f"server overloaded: {queued} items queued (limit {limit}); retry later")
        self.retry_after = retry_after


class BatchLengthError(RuntimeError):
    """The batch function returned a different number of outputs than it got items (a model bug)."""


@dataclass
class _Pending:
    items: list[Any]
    future: asyncio.Future[Sequence[Any]]
    arrived: float = field(default_factory=time.monotonic)


@dataclass
class BatcherStats:
    """Counters the server exports as metrics."""

    batches: int = 0
    items: int = 0
    dropped: int = 0
    last_batch_seconds: float = 0.0
    split_batches: int = 0  # failed batches run again in halves to find the failing request
    failed_requests: int = 0  # requests that got an error from the model


class Batcher:
    """Gathers concurrent requests for one model into batches and runs them off the loop."""

    def __init__(self, run: Callable[[list[Any]], Sequence[Any]], *, executor: Executor,
                 max_batch_size: int = 32, max_wait_ms: float = 5.0, max_queue_items: int = 2048,
                 concurrency: int = 1, on_batch: Callable[[int, float], None] | None = None) -> None:
        if max_batch_size < 1 or max_queue_items < max_batch_size or concurrency < 1:
            raise ValueError("need max_batch_size >= 1, max_queue_items >= max_batch_size, concurrency >= 1")
        self._run = run
        self._executor = executor
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue_items = max_queue_items
        self._concurrency = concurrency
        self._on_batch = on_batch
        self._queue: deque[_Pending] = deque()
        self._queued_items = 0
        self._wakeup: asyncio.Event | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._closing = False
        self._running = 0
        self.stats = BatcherStats()

    @property
    def queued_items(self) -> int:
        return self._queued_items

    def start(self) -> None:
        """Start the worker tasks on the running loop."""
        self._wakeup = asyncio.Event()
        self._workers = [asyncio.create_task(self._work()) for _ in range(self._concurrency)]

    async def stop(self) -> None:
        """Finish what is queued and running, then stop the workers."""
        self._closing = True
        while self._queue or self._running:
            await asyncio.sleep(0.005)
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)

    async def submit(self, items: list[Any]) -> Sequence[Any]:
        """Queue ``items`` and wait for their outputs (one per item, in order).

        Raises:
            Overloaded: the queue cannot take ``len(items)`` more items.
        """
        if self._wakeup is None:
            raise RuntimeError("Batcher.start() has not been called")
        if self._closing or self._queued_items + len(items) > self.max_queue_items:
            # Rough time to drain what is queued, at least one second.
            per_item = self.stats.last_batch_seconds / max(1, self.max_batch_size)
            retry = max(1.0, self._queued_items * per_item)
            raise Overloaded(self._queued_items, self.max_queue_items, retry)
        future: asyncio.Future[Sequence[Any]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(items, future))
        self._queued_items += len(items)
        self._wakeup.set()
        return await future

    def _take(self) -> list[_Pending]:
        """Pop requests for one batch: at least one, then up to ``max_batch_size`` items."""
        batch: list[_Pending] = []
        count = 0
        while self._queue:
            head = self._queue[0]
            if head.future.done():  # cancelled or timed out while queued
                self._queue.popleft()
                self._queued_items -= len(head.items)
                self.stats.dropped += 1
                continue
            if batch and count + len(head.items) > self.max_batch_size:
                break
            self._queue.popleft()
            self._queued_items -= len(head.items)
            batch.append(head)
            count += len(head.items)
        return batch

    async def _work(self) -> None:
        assert self._wakeup is not None  # set by start()
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            # While another batch runs, wait until this one is full or the first item's
            # deadline has passed; an idle model starts at once.
            deadline = self._queue[0].arrived + self.max_wait
            while self._running and self._queued_items < self.max_batch_size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except TimeoutError:
                    break
            batch = self._take()
            if not batch:
                continue
            self._running += 1
            try:
                await self._settle(loop, batch)
            finally:
                self._running -= 1

    async def _settle(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> None:
        """Run ``batch`` and answer its requests; if it fails, run it again in halves.

        Halving (not one request at a time) finds one bad request among n in about 2*log2(n) runs;
        a request that fails alone gets the error its run raised.
        """
        items = [t for p in batch for t in p.items]
        started = time.monotonic()
        try:
            out = await loop.run_in_executor(self._executor, self._run, items)
            parts = _split(self._run, out, [len(p.items) for p in batch])
        except Exception as exc:
            if len(batch) == 1:
                self.stats.failed_requests += 1
                if not batch[0].future.done():
                    batch[0].future.set_exception(exc)
                return
            self.stats.split_batches += 1
            mid = len(batch) // 2
            for half in (batch[:mid], batch[mid:]):
                alive = [p for p in half if not p.future.done()]  # a client gone meanwhile needs no retry
                if alive:
                    await self._settle(loop, alive)
            return
        elapsed = time.monotonic() - started
        self.stats.batches += 1
        self.stats.items += len(items)
        self.stats.last_batch_seconds = elapsed
        if self._on_batch:
            self._on_batch(len(items), elapsed)
        for p, part in zip(batch, parts, strict=True):
            if not p.future.done():
                p.future.set_result(part)


def _split(run: Callable[..., Any], out: Sequence[Any], sizes: list[int]) -> list[Sequence[Any]]:
    """Cut a batch's outputs into each request's slice, refusing outputs that do not match the items.

    Raises:
        BatchLengthError: ``out`` is not a sliceable sequence of ``sum(sizes)`` outputs.
    """
    what = getattr(run, "__qualname__", type(run).__name__)
    expected = sum(sizes)
    try:  # typed as a sequence, but the hook is a model's code: a generator or a dict fails here
        got = len(out)
        if got != expected:
            raise BatchLengthError(f"{what} returned {got} outputs for {expected} inputs; it must return one "
                                   "output per input, in input order")
        bounds = [0, *itertools.accumulate(sizes)]
        return [out[a:b] for a, b in itertools.pairwise(bounds)]
    except (TypeError, KeyError) as exc:
        raise BatchLengthError(f"{what} returned a {type(out).__name__}, not a sequence with one output per "
                               f"item ({exc}); return a list or array of {expected} outputs, in input order") from None

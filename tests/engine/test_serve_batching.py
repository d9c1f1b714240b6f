"""The dynamic Batcher's contract, with fake batch functions (no model, no server)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from aiforge.serve.batching import Batcher, BatchLengthError, Overloaded


def encode(texts: list[str]) -> np.ndarray:
    """One row per text that identifies it: ("r3-1" -> [3, 1])."""
    return np.array([[int(p) for p in t[1:].split("-")] for t in texts], dtype=np.float64).reshape(len(texts), 2)


def request(i: int, size: int) -> list[str]:
    return [f"r{i}-{j}" for j in range(size)]


class Recorder:
    """A predict function that records the batches it sees, optionally slow or gated."""

    def __init__(self, delay: float = 0.0, gate: threading.Event | None = None) -> None:
        self.batches: list[list[str]] = []
        self.delay = delay
        self.gate = gate
        self.entered = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            self.batches.append(list(texts))
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10), "test gate never opened"
        if self.delay:
            time.sleep(self.delay)
        return encode(texts)

    @property
    def sizes(self) -> list[int]:
        return [len(b) for b in self.batches]


def run(body: Callable[[ThreadPoolExecutor], Coroutine[Any, Any, Any]]) -> Any:
    """Run ``body(executor)`` in a fresh event loop with a small thread pool."""
    with ThreadPoolExecutor(max_workers=4) as executor:
        return asyncio.run(asyncio.wait_for(body(executor), 30))


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.002)


def test_full_batches_close_at_once_and_hold_max_batch_size_items() -> None:
    predict = Recorder()

    async def body(executor: ThreadPoolExecutor) -> tuple[list[np.ndarray], float]:
        batcher = Batcher(predict, executor=executor, max_batch_size=4, max_wait_ms=2000, concurrency=1)
        batcher.start()
        t0 = time.monotonic()
        outs = await asyncio.gather(*(batcher.submit(request(i, 1)) for i in range(16)))
        elapsed = time.monotonic() - t0
        await batcher.stop()
        assert batcher.stats.batches == 4 and batcher.stats.items == 16
        return outs, elapsed

    outs, elapsed = run(body)
    assert predict.sizes == [4, 4, 4, 4]
    assert elapsed < 1.5, f"full batches waited for max_wait_ms ({elapsed:.2f} s)"
    for i, out in enumerate(outs):
        np.testing.assert_array_equal(out, [[i, 0]])


def test_mixed_request_sizes_are_gathered_into_batches_of_at_most_max_items() -> None:
    predict = Recorder(delay=0.02)  # slow enough that requests queue up behind a running batch
    sizes = [1, 3, 5, 8, 2, 7, 4, 6, 1, 8, 3, 2, 5, 1, 7, 4, 2, 6, 3, 8]

    async def body(executor: ThreadPoolExecutor) -> list[np.ndarray]:
        batcher = Batcher(predict, executor=executor, max_batch_size=8, max_wait_ms=20, concurrency=2)
        batcher.start()
        outs = await asyncio.gather(*(batcher.submit(request(i, n)) for i, n in enumerate(sizes)))
        await batcher.stop()
        return outs

    outs = run(body)
    assert max(predict.sizes) <= 8, predict.sizes
    assert sum(predict.sizes) == sum(sizes)
    assert len(predict.batches) < len(sizes), "no two requests ever shared a batch"
    seen = sorted(t for batch in predict.batches for t in batch)
    assert seen == sorted(t for i, n in enumerate(sizes) for t in request(i, n))
    # every request gets exactly its own rows, in its own order
    for i, (n, out) in enumerate(zip(sizes, outs, strict=True)):
        assert out.shape == (n, 2)
        np.testing.assert_array_equal(out, encode(request(i, n)))


class FirstCallBlocks:
    """A predict function whose first call blocks until ``release`` is set (a batch in flight)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.batches: list[list[str]] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        first = not self.batches
        self.batches.append(list(texts))
        if first:
            self.entered.set()
            assert self.release.wait(10), "test never released the first batch"
        return encode(texts)


def test_idle_model_runs_a_partial_batch_at_once() -> None:
    predict = Recorder()

    async def body(executor: ThreadPoolExecutor) -> float:
        batcher = Batcher(predict, executor=executor, max_batch_size=100, max_wait_ms=300, concurrency=1)
        batcher.start()
        t0 = time.monotonic()
        out = await batcher.submit(request(0, 3))
        elapsed = time.monotonic() - t0
        np.testing.assert_array_equal(out, encode(request(0, 3)))
        await batcher.stop()
        return elapsed

    elapsed = run(body)
    assert predict.sizes == [3]
    assert elapsed < 0.2, f"an idle batcher waited {elapsed:.3f} s for a batch to fill"


def test_partial_batch_waits_max_wait_while_another_batch_runs() -> None:
    predict = FirstCallBlocks()

    async def body(executor: ThreadPoolExecutor) -> float:
        batcher = Batcher(predict, executor=executor, max_batch_size=100, max_wait_ms=200, concurrency=2)
        batcher.start()
        busy = asyncio.create_task(batcher.submit(request(0, 1)))
        await asyncio.to_thread(predict.entered.wait, 5)
        t0 = time.monotonic()
        out = await batcher.submit(request(1, 3))
        elapsed = time.monotonic() - t0
        np.testing.assert_array_equal(out, encode(request(1, 3)))
        predict.release.set()
        await busy
        await batcher.stop()
        return elapsed

    elapsed = run(body)
    assert [len(b) for b in predict.batches] == [1, 3]
    assert 0.19 <= elapsed < 1.5, f"a partial batch closed after {elapsed:.3f} s, expected about 0.2 s"


def test_max_wait_counts_from_the_first_item_of_the_batch() -> None:
    predict = FirstCallBlocks()

    async def body(executor: ThreadPoolExecutor) -> tuple[float, list[np.ndarray]]:
        batcher = Batcher(predict, executor=executor, max_batch_size=100, max_wait_ms=400, concurrency=2)
        batcher.start()
        busy = asyncio.create_task(batcher.submit(request(9, 1)))
        await asyncio.to_thread(predict.entered.wait, 5)
        t0 = time.monotonic()
        first = asyncio.create_task(batcher.submit(request(0, 1)))
        await asyncio.sleep(0.25)
        second = asyncio.create_task(batcher.submit(request(1, 2)))
        outs = await asyncio.gather(first, second)
        elapsed = time.monotonic() - t0
        predict.release.set()
        await busy
        await batcher.stop()
        return elapsed, outs

    elapsed, outs = run(body)
    assert [len(b) for b in predict.batches] == [1, 3], "the late request did not join the open batch"
    # deadline 0.4 s after the first item; 0.65 s if the late item had reset it
    assert 0.38 <= elapsed < 0.6, f"batch closed after {elapsed:.3f} s"
    np.testing.assert_array_equal(outs[1], encode(request(1, 2)))


def test_full_queue_raises_overloaded_at_once() -> None:
    gate = threading.Event()
    predict = Recorder(gate=gate)

    async def body(executor: ThreadPoolExecutor) -> None:
        batcher = Batcher(predict, executor=executor, max_batch_size=2, max_wait_ms=0, max_queue_items=4,
                          concurrency=1)
        batcher.start()
        try:
            running = asyncio.create_task(batcher.submit(request(0, 2)))
            await wait_until(predict.entered.is_set)  # batch 0 is in the model and blocked
            queued = [asyncio.create_task(batcher.submit(request(i, 2))) for i in (1, 2)]
            await wait_until(lambda: batcher.queued_items == 4)
            t0 = time.monotonic()
            with pytest.raises(Overloaded, match="limit 4") as info:
                await batcher.submit(request(3, 1))
            assert time.monotonic() - t0 < 0.1, "Overloaded was not raised at once"
            assert info.value.retry_after >= 1
            assert batcher.queued_items == 4, "the refused request was queued anyway"
        finally:
            gate.set()
        outs = await asyncio.gather(running, *queued)
        for i, out in enumerate(outs):
            np.testing.assert_array_equal(out, encode(request(i, 2)))
        assert batcher.queued_items == 0
        out = await batcher.submit(request(9, 1))  # room again
        np.testing.assert_array_equal(out, encode(request(9, 1)))
        await batcher.stop()

    run(body)
    assert "r3-0" not in {t for b in predict.batches for t in b}


def test_one_failing_request_fails_alone_and_its_batch_mates_get_their_outputs() -> None:
    # Issue 16, item 2: one bad item used to fail every request batched with it (253 of 400 good
    # requests got a 500 in one run). The failed batch is run again in halves instead.
    calls: list[list[str]] = []

    def predict(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        if "r5-0" in texts:
            raise ValueError("model exploded on r5-0")
        return encode(texts)

    async def body(executor: ThreadPoolExecutor) -> None:
        gate = threading.Event()
        first = Recorder(gate=gate)  # holds the model busy so the next 8 requests queue up as one batch
        batcher = Batcher(lambda t: first(t) if t == ["r99-0"] else predict(t), executor=executor,
                          max_batch_size=8, max_wait_ms=2000, concurrency=1)
        batcher.start()
        blocker = asyncio.create_task(batcher.submit(request(99, 1)))
        await wait_until(first.entered.is_set)
        pending = [asyncio.create_task(batcher.submit(request(i, 1))) for i in range(8)]
        await wait_until(lambda: batcher.queued_items == 8)
        gate.set()
        await blocker
        results = await asyncio.gather(*pending, return_exceptions=True)
        for i, r in enumerate(results):
            if i == 5:
                assert isinstance(r, ValueError) and "r5-0" in str(r), r
            else:
                np.testing.assert_array_equal(r, encode(request(i, 1)))
        assert len(calls[0]) == 8, calls
        # halving finds the one bad request in 1 + 2 + 2 + 2 runs, not 1 + 8
        assert len(calls) == 7, calls
        assert batcher.stats.split_batches == 3 and batcher.stats.failed_requests == 1
        assert batcher.stats.items == 1 + 7  # the blocker and the seven good requests were served
        out = await asyncio.wait_for(batcher.submit(request(6, 3)), 5)
        np.testing.assert_array_equal(out, encode(request(6, 3)))
        await batcher.stop()

    run(body)


def test_a_model_that_fails_every_batch_fails_every_request_with_its_error() -> None:
    def predict(texts: list[str]) -> np.ndarray:
        raise ValueError("model exploded")

    async def body(executor: ThreadPoolExecutor) -> None:
        batcher = Batcher(predict, executor=executor, max_batch_size=3, max_wait_ms=2000, concurrency=1)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(request(i, 1)) for i in range(3)), return_exceptions=True)
        for r in results:
            assert isinstance(r, ValueError) and "model exploded" in str(r), r
        assert batcher.stats.batches == 0  # failed batches are not counted as served
        assert batcher.stats.failed_requests == 3
        await batcher.stop()

    run(body)


def test_wrong_number_of_output_rows_fails_that_request_only() -> None:
    def predict(texts: list[str]) -> np.ndarray:
        out = encode(texts)
        return out[:-1] if "r0-0" in texts else out

    async def body(executor: ThreadPoolExecutor) -> None:
        batcher = Batcher(predict, executor=executor, max_batch_size=4, max_wait_ms=2000, concurrency=1)
        batcher.start()
        bad, good = await asyncio.gather(batcher.submit(request(0, 3)), batcher.submit(request(1, 1)),
                                         return_exceptions=True)
        assert isinstance(bad, BatchLengthError) and isinstance(bad, RuntimeError), bad
        assert "2 outputs for 3 inputs" in str(bad)  # the request's own run, after the batch of 4 failed
        np.testing.assert_array_equal(good, encode(request(1, 1)))
        out = await asyncio.wait_for(batcher.submit(request(2, 3)), 5)
        np.testing.assert_array_equal(out, encode(request(2, 3)))
        await batcher.stop()

    run(body)


def test_any_sequence_of_outputs_is_sliced_per_request() -> None:
    """run_batch may return a list of objects (a recommender's rankings), not only probability rows."""
    def rank(queries: list[str]) -> list[list[tuple[str, int]]]:
        return [[(q, len(q)), (q.upper(), 0)] for q in queries]

    async def body(executor: ThreadPoolExecutor) -> list[Any]:
        batcher = Batcher(rank, executor=executor, max_batch_size=8, max_wait_ms=2000, concurrency=1)
        batcher.start()
        outs = await asyncio.gather(*(batcher.submit(request(i, n)) for i, n in enumerate([2, 1, 3])))
        await batcher.stop()
        assert batcher.stats.batches == 1 and batcher.stats.items == 6
        return outs

    outs = run(body)
    for i, (n, out) in enumerate(zip([2, 1, 3], outs, strict=True)):
        assert out == rank(request(i, n))  # each request gets exactly its own outputs, in order


@pytest.mark.parametrize(("make_output", "message"), [
    (lambda items: [*items, "extra"], "returned 4 outputs for 3 inputs; it must return one output per input"),
    (lambda items: [], "returned 0 outputs for 3 inputs"),
    (lambda items: (x for x in items), "returned a generator, not a sequence with one output per item"),
    (lambda items: dict(enumerate(items)), "returned a dict, not a sequence with one output per item"),
], ids=["too-many", "none", "generator", "dict"])
def test_outputs_that_do_not_match_the_items_fail_that_request_and_never_hang(make_output, message) -> None:
    def run_batch(items: list[str]) -> Any:
        return make_output(items) if "r0-0" in items else list(items)

    async def body(executor: ThreadPoolExecutor) -> None:
        batcher = Batcher(run_batch, executor=executor, max_batch_size=4, max_wait_ms=2000, concurrency=1)
        batcher.start()
        bad, good = await asyncio.wait_for(asyncio.gather(batcher.submit(request(0, 3)), batcher.submit(request(1, 1)),
                                                          return_exceptions=True), 5)
        assert isinstance(bad, BatchLengthError), bad
        assert message in str(bad) and "run_batch" in str(bad), str(bad)  # names the hook that broke the contract
        assert list(good) == request(1, 1)  # batched with the broken request, answered on its own run
        assert batcher.stats.batches == 1
        out = await asyncio.wait_for(batcher.submit(request(2, 3)), 5)  # the worker survived
        assert list(out) == request(2, 3)
        await batcher.stop()

    run(body)


def test_cancelled_requests_are_dropped_before_their_batch_runs() -> None:
    gate = threading.Event()
    predict = Recorder(gate=gate)

    async def body(executor: ThreadPoolExecutor) -> None:
        batcher = Batcher(predict, executor=executor, max_batch_size=2, max_wait_ms=0, max_queue_items=16,
                          concurrency=1)
        batcher.start()
        try:
            first = asyncio.create_task(batcher.submit(request(0, 2)))
            await wait_until(predict.entered.is_set)
            gone = asyncio.create_task(batcher.submit(request(1, 2)))
            kept = asyncio.create_task(batcher.submit(request(2, 2)))
            # a client timing out while queued is a cancellation too
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(batcher.submit(request(3, 1)), 0.01)
            gone.cancel()
            await wait_until(gone.done)
            assert gone.cancelled()
        finally:
            gate.set()
        np.testing.assert_array_equal(await first, encode(request(0, 2)))
        np.testing.assert_array_equal(await kept, encode(request(2, 2)))
        assert batcher.stats.dropped == 2
        assert batcher.queued_items == 0
        await batcher.stop()

    run(body)
    texts = {t for b in predict.batches for t in b}
    assert not texts & {"r1-0", "r1-1", "r3-0"}, predict.batches
    assert predict.sizes == [2, 2]


def test_on_batch_reports_size_and_seconds() -> None:
    reports: list[tuple[int, float]] = []

    async def body(executor: ThreadPoolExecutor) -> None:
        batcher = Batcher(Recorder(delay=0.01), executor=executor, max_batch_size=5, max_wait_ms=1000,
                          concurrency=1, on_batch=lambda n, s: reports.append((n, s)))
        batcher.start()
        await asyncio.gather(batcher.submit(request(0, 2)), batcher.submit(request(1, 3)))
        await batcher.stop()

    run(body)
    assert len(reports) == 1
    size, seconds = reports[0]
    assert size == 5 and 0.01 <= seconds < 5


def test_submit_before_start_and_bad_settings_are_refused() -> None:
    with ThreadPoolExecutor(max_workers=1) as executor:
        for bad in ({"max_batch_size": 0}, {"max_batch_size": 8, "max_queue_items": 4}, {"concurrency": 0}):
            with pytest.raises(ValueError, match="max_batch_size"):
                Batcher(encode, executor=executor, **bad)
        batcher = Batcher(encode, executor=executor)

        async def body() -> None:
            with pytest.raises(RuntimeError, match="start"):
                await batcher.submit(["r0-0"])

        asyncio.run(body())


def test_stop_finishes_the_batch_in_flight() -> None:
    gate = threading.Event()
    predict = Recorder(gate=gate, delay=0.2)  # the second batch is surely still running when the queue is empty

    async def body(executor: ThreadPoolExecutor) -> None:
        batcher = Batcher(predict, executor=executor, max_batch_size=2, max_wait_ms=0, concurrency=1)
        batcher.start()
        pending = [asyncio.create_task(batcher.submit(request(i, 2))) for i in range(2)]
        await wait_until(predict.entered.is_set)
        stopping = asyncio.create_task(batcher.stop())
        await asyncio.sleep(0.05)
        gate.set()
        await stopping
        try:
            outs = await asyncio.wait_for(asyncio.gather(*pending), 2)
        except TimeoutError:
            pytest.fail("requests whose batch was running when stop() was called never got an answer")
        for i, out in enumerate(outs):
            np.testing.assert_array_equal(out, encode(request(i, 2)))

    run(body)

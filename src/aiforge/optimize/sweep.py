"""``aiforge optimize``: measure recipe x graph level x threads x batching on a bundle's parity data.

Two phases, both bounded by one time budget (the sweep stops early and keeps what it measured):

1. *Graphs*: for each precision recipe the kind offers (the bundle's fp32 graph first) and each
   onnxruntime graph optimization level, top-1 agreement with the fp32 graph on the parity items;
   for each intra-op thread count, offline items/s (the runtime's own batches of 64) and the
   process's resident memory after loading (RSS).
2. *Serving*: for the graph settings that pass the agreement gate, fastest first, each
   ``max_batch_size`` x ``max_wait_ms``: load through the server's own :class:`Batcher` in this process
   (``concurrency`` clients, each sending one item and waiting for its answer, no HTTP), at two
   concurrencies: items/s, p50 and p99 latency.

Rows below the gate are kept in the table, marked, and never chosen.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aiforge.bundle.runtime import Runtime
from aiforge.optimize.hooks import Candidate
from aiforge.serve.batching import Batcher

__all__ = ["Stopwatch", "SweepGrid", "candidate_row", "measure_graph", "rss_mb", "serve_load"]


@dataclass(frozen=True)
class SweepGrid:
    """The settings to sweep (each tuple in the order tried)."""

    levels: tuple[str, ...] = ("basic", "all")
    threads: tuple[int, ...] = (1, 2)
    batch_sizes: tuple[int, ...] = (16, 64)
    waits_ms: tuple[float, ...] = (2.0, 5.0)
    concurrencies: tuple[int, int] = (1, 16)
    timing_items: int = 192  # items each offline / served measurement sends


class Stopwatch:
    """The sweep's time budget."""

    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self.start = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.budget_s - self.elapsed


def rss_mb() -> float:
    """This process's resident set size now (``/proc/self/statm``; 0 where there is none)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def _agreement(probs: np.ndarray, reference: np.ndarray) -> float:
    return float((probs.argmax(1) == reference.argmax(1)).mean())


@dataclass(frozen=True)
class GraphMeasure:
    """Phase 1 of one (recipe, level, threads)."""

    agreement: float
    max_abs_prob_diff: float
    offline_items_per_s: float
    rss_mb: float


def measure_graph(open_runtime: Callable[[], Runtime], items: list[Any], timing: list[Any], *,
                  reference: np.ndarray | None) -> tuple[Runtime, np.ndarray, GraphMeasure]:
    """Load, score the parity ``items`` (the warm-up), then time the timing items offline once."""
    before = rss_mb()
    rt = open_runtime()
    probs = rt.predict_proba(items)
    ref = probs if reference is None else reference
    t0 = time.perf_counter()
    rt.predict_proba(timing)
    best = time.perf_counter() - t0
    return rt, probs, GraphMeasure(agreement=_agreement(probs, ref),
                                   max_abs_prob_diff=float(np.abs(probs - ref).max()),
                                   offline_items_per_s=len(timing) / best, rss_mb=max(0.0, rss_mb() - before))


@dataclass(frozen=True)
class LoadResult:
    """One served measurement at one concurrency."""

    items_per_s: float
    p50_ms: float
    p99_ms: float


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _load(run: Callable[[list[Any]], Sequence[Any]], items: list[Any], *, concurrency: int,
                max_batch_size: int, max_wait_ms: float) -> LoadResult:
    with ThreadPoolExecutor(1) as executor:
        batcher = Batcher(run, executor=executor, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms,
                          max_queue_items=max(2048, max_batch_size))
        batcher.start()
        latencies: list[float] = []
        todo = iter(range(len(items)))

        async def client() -> None:
            for i in todo:
                t0 = time.perf_counter()
                await batcher.submit([items[i]])
                latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
        await batcher.stop()
    return LoadResult(items_per_s=len(items) / wall, p50_ms=1000 * statistics.median(latencies),
                      p99_ms=1000 * _percentile(latencies, 0.99))


def serve_load(rt: Runtime, items: list[Any], *, concurrency: int, max_batch_size: int,
               max_wait_ms: float) -> LoadResult:
    """``len(items)`` one-item requests from ``concurrency`` clients through the server's Batcher."""
    return asyncio.run(_load(rt.run_batch, items, concurrency=concurrency, max_batch_size=max_batch_size,
                             max_wait_ms=max_wait_ms))


def candidate_row(candidate: Candidate, *, level: str, threads: int, graph: GraphMeasure, size_mb: float,
                  min_agreement: float) -> dict[str, Any]:
    """The table row of one graph setting (serving columns empty until measured)."""
    return {"recipe": candidate.recipe, "precision": candidate.precision, "graph_optimization_level": level,
            "intra_op_threads": threads, "max_batch_size": None, "max_wait_ms": None,
            "offline_items_per_s": round(graph.offline_items_per_s, 1),
            "agreement_with_fp32": round(graph.agreement, 5),
            "max_abs_prob_diff": float(f"{graph.max_abs_prob_diff:.3g}"),
            "size_mb": round(size_mb, 2), "rss_mb": round(graph.rss_mb, 1),
            "gate": "pass" if graph.agreement >= min_agreement else "below gate"}

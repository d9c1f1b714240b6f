"""Live numbers for the home page: requests/s, p50/p99 latency and items/s over the last minute.

Read from the server's own Prometheus metrics (the ``/metrics`` counters and histograms), so the
page and a Prometheus scrape agree. Each call takes a snapshot of the cumulative counts; the window
is from the oldest snapshot still within ``window_s`` (or the newest older one) to now, and the
quantiles are interpolated inside the histogram's buckets, as PromQL's ``histogram_quantile`` does.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiforge.serve.metrics import ServerMetrics

__all__ = ["LiveStats", "is_model_route"]

# Routes the numbers leave out: the pages themselves, their JSON, probes and the operator routes.
_NOT_MODEL = ("/v1/ui", "/v2/health", "/ui", "/metrics")


def is_model_route(route: str) -> bool:
    """A route a client calls to use a model (``/v1/...`` or ``/v2/...``, not the pages, probes or metrics)."""
    if not route.startswith(("/v1/", "/v2/")):
        return False
    return not route.startswith(_NOT_MODEL)


@dataclass(frozen=True)
class _Snapshot:
    at: float
    requests: float
    buckets: tuple[tuple[float, float], ...]  # (upper bound, cumulative count), increasing bounds
    items: dict[str, float]


def _quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of a cumulative histogram (linear inside the bucket; None when empty)."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # past the last finite bucket: its bound, as histogram_quantile does
            width = count - lower_count
            return lower_bound + (bound - lower_bound) * ((rank - lower_count) / width if width else 1.0)
        lower_bound, lower_count = bound, count
    return lower_bound


@dataclass
class LiveStats:
    """Windowed rates and latency quantiles from :class:`ServerMetrics` (thread-safe)."""

    metrics: ServerMetrics
    window_s: float = 60.0
    _snapshots: deque[_Snapshot] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._snapshots.append(self._take())  # the server's start: every count is zero from here on

    def _take(self) -> _Snapshot:
        requests = 0.0
        per_bound: dict[float, float] = {}
        for family in self.metrics.latency.collect():
            for s in family.samples:
                if s.name.endswith("_bucket") and is_model_route(s.labels.get("route", "")):
                    bound = float(s.labels["le"])
                    per_bound[bound] = per_bound.get(bound, 0.0) + s.value
                elif s.name.endswith("_count") and is_model_route(s.labels.get("route", "")):
                    requests += s.value
        items = {}
        for family in self.metrics.items.collect():
            for s in family.samples:
                if s.name.endswith("_total"):
                    items[s.labels["model"]] = s.value
        return _Snapshot(time.monotonic(), requests, tuple(sorted(per_bound.items())), items)

    def read(self) -> dict[str, Any]:
        """``{window_s, requests, requests_per_s, p50_ms, p99_ms, items_per_s: {model: n}}`` over the window."""
        now = self._take()
        with self._lock:
            while len(self._snapshots) > 1 and now.at - self._snapshots[1].at >= self.window_s:
                self._snapshots.popleft()  # keep one snapshot at or before the window's start
            base = self._snapshots[0]
            self._snapshots.append(now)
        elapsed = max(now.at - base.at, 1e-9)
        before = dict(base.buckets)
        window = [(bound, count - before.get(bound, 0.0)) for bound, count in now.buckets]
        requests = now.requests - base.requests
        p50, p99 = _quantile(0.5, window), _quantile(0.99, window)
        return {
            "window_s": round(elapsed, 1),
            "requests": int(requests),
            "requests_per_s": round(requests / elapsed, 3),
            "p50_ms": None if p50 is None else round(p50 * 1000, 2),
            "p99_ms": None if p99 is None else round(p99 * 1000, 2),
            "items_per_s": {m: round((v - base.items.get(m, 0.0)) / elapsed, 3) for m, v in now.items.items()},
        }

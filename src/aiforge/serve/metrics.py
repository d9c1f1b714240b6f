"""Prometheus metrics of one server (own registry, so several apps can live in one process)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

__all__ = ["ServerMetrics"]


class ServerMetrics:
    """Requests by route and status, latency, batch sizes, queue depth, items served."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("aiforge_requests", "HTTP requests", ["route", "status"], registry=self.registry)
        self.latency = Histogram(
            "aiforge_request_latency_seconds", "HTTP request latency", ["route"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.batch_size = Histogram(
            "aiforge_batch_size", "Items per model batch", ["model"], registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
        )
        self.batch_latency = Histogram("aiforge_batch_seconds", "Model time per batch", ["model"],
                                       registry=self.registry)
        self.queue_depth = Gauge("aiforge_queue_items", "Items waiting for a batch", ["model"], registry=self.registry)
        self.items = Counter("aiforge_items", "Items predicted (rate() gives items per second)", ["model"],
                             registry=self.registry)
        self.runtime_events = RuntimeEvents()
        self.registry.register(self.runtime_events)
        self.rate_limited = Counter("aiforge_rate_limited", "Requests refused with 429 by the per-client rate "
                                    "limit", ["route"], registry=self.registry)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


class RuntimeEvents(Collector):
    """``aiforge_runtime_events_total{model, counter}``: each served runtime's own monotonic counts since
    load (e.g. ``fp32_fallback_items``: items guarded int8 re-ran in fp32), read at each scrape."""

    def __init__(self) -> None:
        self.source: Callable[[], Mapping[str, Mapping[str, int]]] = dict

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily("aiforge_runtime_events", "A runtime's own counts since load (e.g. "
                                     "fp32_fallback_items: items guarded int8 re-ran in fp32)",
                                     labels=["model", "counter"])
        for model, counts in self.source().items():
            for counter, value in counts.items():
                family.add_metric([model, counter], float(value))
        yield family

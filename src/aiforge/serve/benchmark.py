"""``aiforge bench``: an aiforge server on loopback, measured at several concurrency levels."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from aiforge.bundle.format import read_manifest
from aiforge.bundle.registry import Registry
from aiforge.serve.loadgen import aiforge_server_args, free_port, measure_levels, running_server

__all__ = ["DEFAULT_TEXTS", "benchmark_bundle", "rss_mb"]

DEFAULT_TEXTS = [
    "I still have not received my card", "How do I top up with Apple Pay?", "what is my balance",
    "Why was I charged a fee for a transfer?", "my card payment was declined at the shop",
    "Can I change my PIN at an ATM?", "the exchange rate you applied is wrong",
    "I want to close my account", "where is the money I transferred yesterday",
    "is there a limit on how much I can top up each month",
]


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` in MB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def benchmark_bundle(bundle: str, *, levels: list[int], duration: float, texts: list[str] | None = None,
                     home: str | Path | None = None, max_batch_size: int = 64, max_wait_ms: float = 5.0,
                     precision: str = "auto", protocol: str = "v2") -> dict[str, Any]:
    """Start ``aiforge serve`` for ``bundle``, measure each level, stop it; return a report."""

    registry = Registry(home)
    path = registry.resolve(bundle)
    name = read_manifest(path, verify=False).name
    port = free_port()
    env = dict(os.environ, AIFORGE_HOME=str(registry.home))
    args = aiforge_server_args([str(path)], port=port, extra=[
        "--max-batch-size", str(max_batch_size), "--max-wait-ms", str(max_wait_ms), "--precision", precision])
    route = f"/v2/models/{name}/infer" if protocol == "v2" else f"/v1/models/{name}/predict"
    with running_server(args, port=port, env=env) as (proc, ready):
        results = measure_levels(f"http://127.0.0.1:{port}", route, texts or DEFAULT_TEXTS, levels=levels,
                                 duration=duration, protocol=protocol)
        memory = rss_mb(proc.pid)
    return {"bundle": str(path), "name": name, "ready_seconds": ready, "rss_mb_after_load": memory,
            "max_batch_size": max_batch_size, "max_wait_ms": max_wait_ms, "precision": precision,
            "levels": results}

"""``ship``: check a bundle's release gates on the exported bundle and promote it to production.

Works for every kind with a ``checks`` row: the kind measures its quality (and fairness) numbers
and their intervals on the bundle through the torch-free Runtime; size (the manifest's files) and
latency (p95 of single-item calls on a representative item, over repeated timing runs, with an
interval) are measured here, the same way for everyone. Each gate is decided by the spec's
``gates.decide`` rule (:func:`aiforge.audit.gates.decide`); an undecided gate blocks promotion
unless ``gates.allow_undecided`` is true.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from aiforge.app import App
from aiforge.audit.checks import checks_for, gates_class, stored_spec
from aiforge.audit.gates import GATES, GateResult, Measurements, ReleaseGates, evaluate_gates, parse_gates
from aiforge.bundle.registry import Registry
from aiforge.bundle.runtime import Runtime
from aiforge.errors import AiforgeError

__all__ = ["LatencyMeasurement", "ShipReport", "bundle_size_mb", "measure_latency", "measure_latency_runs",
           "ship"]


@dataclass(frozen=True)
class ShipReport:
    """The verdict of every gate, what they were measured on, and the stage the bundle now has."""

    name: str
    version: int
    task: str
    path: Path
    results: list[GateResult]
    measurements: Measurements
    stage: str
    source: str = ""

    decide: str = "upper_bound"
    allow_undecided: bool = False

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def undecided(self) -> list[GateResult]:
        """The gates neither passed nor failed (their interval straddles the limit, or groups are too small)."""
        return [r for r in self.results if r.decision == "undecided"]

    def rows_per_group(self) -> dict[str, dict[str, int]]:
        """How many rows each group of each audited feature had in the data the gates were measured on."""
        feats = self.measurements.audit.get("features", {})
        return {str(f): {str(g): int(r["count"]) for g, r in feat.get("groups", {}).items()}
                for f, feat in feats.items() if isinstance(feat, dict)}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``aiforge ship -o`` writes)."""
        return {"name": self.name, "version": self.version, "task": self.task, "passed": self.passed,
                "stage": self.stage, "data": self.source, "decide": self.decide,
                "allow_undecided": self.allow_undecided, "size_mb": self.measurements.size_mb,
                "p95_latency_ms": self.measurements.p95_latency_ms,
                "p95_latency_interval": (list(self.measurements.p95_latency_interval)
                                         if self.measurements.p95_latency_interval else None),
                "rows_per_group": self.rows_per_group(),
                "gates": [r.to_dict() for r in self.results]}


@dataclass(frozen=True)
class LatencyMeasurement:
    """p95 latency over all timed calls, its interval, and each timing run's own p95 (all ms)."""

    p95_ms: float
    interval: tuple[float, float]
    run_p95_ms: list[float]
    calls: int


def measure_latency_runs(call: Callable[[], object], *, runs: int = 5, calls: int = 60, warmup: int = 10,
                         confidence: float = 0.95) -> LatencyMeasurement:
    """p95 of ``runs`` timing runs of ``calls`` single-item calls each, with a conservative interval.

    The interval covers both the distribution-free (order-statistic) confidence interval of the
    pooled 95th percentile and the spread of the runs' own p95s (a busy machine shows up there).
    """
    for _ in range(warmup):
        call()
    times = np.empty((runs, calls))
    for r in range(runs):
        for i in range(calls):
            start = time.perf_counter()
            call()
            times[r, i] = time.perf_counter() - start
    pooled = np.sort(times.ravel()) * 1000
    n = len(pooled)
    z = float(NormalDist().inv_cdf((1 + confidence) / 2))
    spread = z * math.sqrt(n * 0.95 * 0.05)  # normal approximation of the binomial ranks around the 95th percentile
    lo_rank, hi_rank = max(math.floor(n * 0.95 - spread), 1), min(math.ceil(n * 0.95 + spread) + 1, n)
    per_run = [float(np.percentile(t, 95) * 1000) for t in times]
    lo = min(float(pooled[max(lo_rank - 1, 0)]), min(per_run))
    hi = max(float(pooled[hi_rank - 1]), max(per_run))
    return LatencyMeasurement(float(np.percentile(pooled, 95)), (lo, hi), per_run, n)


def measure_latency(call: Callable[[], object], *, calls: int = 200, warmup: int = 10) -> float:
    """p95 wall time (ms) of ``call()`` (one single-item predict), after a warm-up, on this machine."""
    for _ in range(warmup):
        call()
    times = np.empty(calls)
    for i in range(calls):
        start = time.perf_counter()
        call()
        times[i] = time.perf_counter() - start
    return float(np.percentile(times, 95) * 1000)


def bundle_size_mb(rt: Runtime) -> float:
    """The bundle's size: the sum of the sizes its manifest lists, in MB (10^6 bytes)."""
    return sum(int(f["size"]) for f in rt.manifest.files.values()) / 1e6


def _exported(target: str | Path, *, home: str | Path | None, progress: bool) -> Runtime:
    path = Path(target)
    if path.is_file() and path.suffix in (".yaml", ".yml"):

        application = App.from_yaml(path, home=home)
        application.fit(progress=progress)
        return Runtime.load(application.export().path, home=home)
    return Runtime.load(target, home=home)


def ship(spec_or_bundle: str | Path, *, data: str | Path | None = None, home: str | Path | None = None,
         progress: bool = False, gates: Mapping[str, Any] | None = None) -> ShipReport:
    """Evaluate the release gates of a spec (train + export first) or of a registered bundle; promote if all pass.

    The gates come from the spec's ``gates:`` block (for a bundle: the spec stored in its
    manifest), or from ``gates`` when given (checked against the kind's gates). Everything is
    measured on the exported bundle through the torch-free Runtime, on ``data`` (default: the
    spec's held-out test split: its test file, or rows held out of training that chose nothing).
    A gate passes, fails or is undecided by the gates' ``decide`` rule; undecided ones block
    promotion unless ``allow_undecided``.

    Raises:
        SpecError: the spec is invalid, or a gate is unknown for the bundle's kind.
        AiforgeError: no gate is set.
        BundleError: the bundle's kind has no gates, or its manifest stores no spec.
        DataError: the data lacks what the kind's gates need.
    """
    rt = _exported(spec_or_bundle, home=home, progress=progress)
    checks = checks_for(rt)
    spec = stored_spec(rt)
    stored = getattr(spec, "gates", None)
    chosen: ReleaseGates = (parse_gates(gates_class(rt), gates) if gates is not None
                            else stored if isinstance(stored, ReleaseGates) else gates_class(rt)())
    rows = (*checks.gates, *GATES)
    if not any(chosen.is_set(g.key) for g in rows):
        raise AiforgeError(f"{rt.name}: the spec sets no gates; add a gates: block (e.g. max_size_mb) to ship. "
                           f"Gates for {rt.manifest.task}: {', '.join(g.key for g in rows)}.")
    measured = checks.measure(rt, spec, chosen, Path(data) if data is not None else None)
    latency = measure_latency_runs(measured.probe) if chosen.is_set("max_p95_latency_ms") else None
    stored_baseline = rt.manifest.extra.get("baseline")
    m = Measurements(audit=measured.audit, size_mb=bundle_size_mb(rt),
                     p95_latency_ms=latency.p95_ms if latency else float("nan"),
                     p95_latency_interval=latency.interval if latency else None,
                     baseline=stored_baseline if isinstance(stored_baseline, dict) else None)
    results = evaluate_gates(rows, chosen, m, measured.features)
    registry = Registry(home)
    name, version = rt.manifest.name, int(rt.manifest.version)
    record = registry.get(name, version)
    if all(r.passed for r in results):
        record = registry.set_stage(name, version, "production")
    report = ShipReport(name, version, rt.manifest.task, rt.path, results, m, record.stage, measured.source,
                        chosen.decide, chosen.allow_undecided)
    kept = registry.ship_record(name, version)  # the last ship of this version, for the model page
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_text(json.dumps({**report.to_dict(), "shipped_at": time.time()}, default=str), encoding="utf-8")
    return report

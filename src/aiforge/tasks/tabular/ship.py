"""``ship``: check a bundle's release gates on the exported model and promote it to production."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aiforge.audit.gates import GateResult, Measurements, evaluate_gates
from aiforge.errors import AiforgeError, BundleError

__all__ = ["ShipReport", "measure_latency", "ship"]


@dataclass(frozen=True)
class ShipReport:
    """The verdict of every gate, and the stage the bundle now has."""

    name: str
    version: int
    path: Path
    results: list[GateResult]
    measurements: Measurements
    stage: str

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "passed": self.passed, "stage": self.stage,
                "size_mb": self.measurements.size_mb, "p95_latency_ms": self.measurements.p95_latency_ms,
                "gates": [r.to_dict() for r in self.results]}


def measure_latency(rt: Any, record: dict[str, Any], *, calls: int = 200) -> float:
    """p95 wall time (ms) of ``rt.predict([record])``, after a warm-up, on this machine."""
    for _ in range(10):
        rt.predict([record])
    times = np.empty(calls)
    for i in range(calls):
        start = time.perf_counter()
        rt.predict([record])
        times[i] = time.perf_counter() - start
    return float(np.percentile(times, 95) * 1000)


def ship(spec_or_bundle: str | Path, *, data: str | Path | None = None, home: str | Path | None = None,
         progress: bool = False) -> ShipReport:
    """Evaluate the gates of a spec (train + export first) or of a registered bundle; promote if all pass.

    The gates come from the spec's ``gates:`` block (for a bundle: the spec stored in its manifest).
    Accuracy and fairness are measured by auditing the exported ONNX graph through the torch-free
    Runtime on ``data`` (default: the spec's test split, else its validation split).

    Raises:
        SpecError: the spec is invalid or has no gates.
        BundleError: the bundle is not a tabular one.
        DataError: the data lacks the label or a sensitive column.
    """
    from aiforge.bundle.registry import Registry
    from aiforge.bundle.runtime import Runtime
    from aiforge.tasks.tabular.audit import audit_bundle, audit_scores, settings_from
    from aiforge.tasks.tabular.data import frame_columns, load_tabular
    from aiforge.tasks.tabular.runtime import TabularRuntime
    from aiforge.tasks.tabular.spec import TabularSpec

    registry = Registry(home)
    target = Path(spec_or_bundle)
    if target.is_file() and target.suffix in (".yaml", ".yml"):
        from aiforge.app import App

        application = App.from_yaml(target, home=home)
        application.fit(progress=progress)
        rt = Runtime.load(application.export().path, home=home)
    else:
        rt = Runtime.load(spec_or_bundle, home=home)
    if not isinstance(rt, TabularRuntime):
        raise BundleError(f"{spec_or_bundle}: aiforge ship checks tabular-classification bundles; "
                          f"this one is {rt.manifest.task!r}.")
    spec = TabularSpec.model_validate(rt.manifest.extra["spec"])
    if data is not None:
        audit = audit_bundle(rt, data)
    else:
        tab = load_tabular(spec, seed=spec.model.seed)
        frame = tab.test if tab.test is not None else tab.validation
        p = rt.proba_columns(frame_columns(frame.frame, rt.schema))[:, 1].astype(np.float64)
        audit = audit_scores(frame.y, p, frame.sensitive, settings_from(spec.audit))
    size_mb = sum(int(f["size"]) for f in rt.manifest.files.values()) / 1e6
    example = rt.pipeline.get("example")
    if not isinstance(example, dict):
        raise BundleError(f"{rt.path}: pipeline.json has no example record to time.")
    latency = measure_latency(rt, example) if spec.gates.max_p95_latency_ms is not None else float("nan")
    m = Measurements(audit=audit.report, size_mb=size_mb, p95_latency_ms=latency)
    mitigated = rt.pipeline.get("mitigation", {}).get("sensitive_feature")
    features = spec.gates.sensitive_features or ([mitigated] if mitigated else rt.sensitive_features[:1])
    results = evaluate_gates(spec.gates, m, features)
    if not results:
        raise AiforgeError(f"{rt.name}: the spec sets no gates; add a gates: block (e.g. min_accuracy) to ship.")
    name, version = rt.manifest.name, int(rt.manifest.version)
    record = registry.get(name, version)
    if all(r.passed for r in results):
        record = registry.set_stage(name, version, "production")
    return ShipReport(name, version, rt.path, results, m, record.stage)

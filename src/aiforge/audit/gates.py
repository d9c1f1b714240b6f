"""Release gates: a table of checks ``aiforge ship`` runs on the exported bundle before promoting it.

Each :class:`Gate` reads one number from :class:`Measurements` (the audit of the exported ONNX
graph, its size, its latency on the Runtime) and compares it with the spec's ``gates:`` value.
Fairness gates run once per gated sensitive feature.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["GATES", "Gate", "GateResult", "Measurements", "evaluate_gates"]


@dataclass(frozen=True)
class Measurements:
    """What the gates are checked against, all measured on the exported bundle."""

    audit: dict[str, Any]
    size_mb: float
    p95_latency_ms: float


@dataclass(frozen=True)
class Gate:
    """One row of the gate table: the ``gates:`` key, how to measure, and which way passes."""

    key: str
    description: str
    direction: str  # "min": measured >= limit; "max": measured <= limit; "true": must hold
    measure: Callable[[Measurements, str | None], float | None]
    per_feature: bool = False


@dataclass(frozen=True)
class GateResult:
    """A checked gate: limit, measured value and verdict (``None`` measured = could not judge = fail)."""

    key: str
    feature: str | None
    limit: float | bool
    measured: float | None
    passed: bool
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _feat(m: Measurements, feature: str | None, key: str) -> float | None:
    value = m.audit["features"].get(feature or "", {}).get(key)
    return float(value) if value is not None else None


def _four_fifths(m: Measurements, feature: str | None) -> float | None:
    ff = m.audit["features"].get(feature or "", {}).get("four_fifths")
    return None if ff is None else float(ff["min_max_ratio"])


GATES: tuple[Gate, ...] = (
    Gate("min_accuracy", "accuracy of the exported model", "min", lambda m, f: m.audit["overall"]["accuracy"]),
    Gate("min_roc_auc", "ROC AUC of the exported model", "min", lambda m, f: m.audit["overall"]["roc_auc"]),
    Gate("max_demographic_parity_difference", "demographic parity difference", "max",
         lambda m, f: _feat(m, f, "demographic_parity_difference"), per_feature=True),
    Gate("max_equalized_odds_difference", "equalized odds difference", "max",
         lambda m, f: _feat(m, f, "equalized_odds_difference"), per_feature=True),
    Gate("four_fifths", "four-fifths rule (every selection-rate ratio in [0.8, 1.25])", "true", _four_fifths,
         per_feature=True),
    Gate("max_p95_latency_ms", "p95 latency of one record on the Runtime (ms)", "max", lambda m, f: m.p95_latency_ms),
    Gate("max_size_mb", "bundle size (MB)", "max", lambda m, f: m.size_mb),
)


def evaluate_gates(gates: Any, m: Measurements, features: list[str]) -> list[GateResult]:
    """Check every gate set in ``gates`` (a GateSpec); unset ones are skipped."""
    out: list[GateResult] = []
    for gate in GATES:
        limit = getattr(gates, gate.key)
        if limit is None or limit is False:
            continue
        for feature in (features if gate.per_feature else [None]):
            value = gate.measure(m, feature)
            if value is None:
                out.append(GateResult(gate.key, feature, limit, None, False,
                                      "not measurable (feature missing or groups too small to judge)"))
                continue
            if gate.direction == "min":
                ok = value >= limit
            elif gate.direction == "max":
                ok = value <= limit
            else:
                ff = m.audit["features"][feature or ""]["four_fifths"]
                ok = bool(ff["passes"])
            note = ""
            if gate.key == "four_fifths" and not ok:
                ff = m.audit["features"][feature or ""]["four_fifths"]
                note = f"flagged: {', '.join(ff['flagged_groups']) or 'min/max ratio below 0.8'}"
            out.append(GateResult(gate.key, feature, limit, float(value), bool(ok), note))
    return out

"""Release gates: the typed ``gates:`` block every spec can carry and the table of checks ``aiforge ship`` runs.

Each :class:`Gate` row reads one number from :class:`Measurements` (the kind's report on the
exported bundle, its size, its latency on the torch-free Runtime) and compares it with the
spec's ``gates:`` value. The rows here (size and latency) hold for every kind; each kind adds
its own rows (quality, fairness) in its ``checks`` module, and its spec's gates block is a
subclass of :class:`ReleaseGates` (or of :class:`ClassifierGates`) with exactly those keys.
Per-feature gates (fairness) run once per gated sensitive feature.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationError, model_validator

from aiforge.audit.baseline import margin_verdict
from aiforge.errors import SpecError
from aiforge.spec import Strict

__all__ = ["CLASSIFIER_GATES", "GATES", "ClassifierGates", "Gate", "GateResult", "Measurements", "ReleaseGates",
           "Verdict", "evaluate_gates", "gate_keys", "parse_gates"]


class ReleaseGates(Strict):
    """The gates every kind has; unset ones are not checked. Kinds subclass it and add theirs.

    A subclass names its kind in ``kind``; settings that are not gates (which features to
    gate, say) are listed in ``settings``.
    """

    kind: ClassVar[str] = "any"
    settings: ClassVar[frozenset[str]] = frozenset()

    max_p95_latency_ms: float | None = Field(default=None, gt=0)
    max_size_mb: float | None = Field(default=None, gt=0)
    min_margin_over_baseline: float | None = Field(default=None, ge=-1, le=1)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, raw: Any) -> Any:
        # checked here (not only by extra="forbid") so the message names the kind and its gates
        if isinstance(raw, Mapping):
            valid = sorted(cls.model_fields)
            for key in raw:
                if key not in cls.model_fields:
                    raise ValueError(unknown_gate(str(key), cls.kind, valid))
        return raw

    def is_set(self, key: str) -> bool:
        """Whether the gate ``key`` is to be checked (set to a number, or to true)."""
        value = getattr(self, key)
        return value is not None and value is not False


def unknown_gate(key: str, kind: str, valid: Sequence[str]) -> str:
    """The message for a gate ``key`` that ``kind`` does not have."""
    guess = difflib.get_close_matches(key, list(valid), n=1)
    hint = f" Did you mean {guess[0]!r}?" if guess else ""
    return f"unknown gate {key!r} for {kind} bundles.{hint} Gates for {kind}: {', '.join(valid)}"


class ClassifierGates(ReleaseGates):
    """The quality gates of a classifier (text, image): accuracy, macro-F1 and top-5 accuracy."""

    min_accuracy: float | None = Field(default=None, ge=0, le=1)
    min_macro_f1: float | None = Field(default=None, ge=0, le=1)
    min_top5_accuracy: float | None = Field(default=None, ge=0, le=1)


def parse_gates(cls: type[ReleaseGates], raw: Mapping[str, Any], *, where: str = "gates") -> ReleaseGates:
    """Validate gates given as a mapping (``--gate`` on the command line) against a kind's gates class.

    Raises:
        SpecError: an unknown gate (named, with the kind's valid gates) or a bad value.
    """
    try:
        return cls.model_validate(dict(raw))
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            msg = str(err["msg"]).removeprefix("Value error, ")
            parts.append(f"{where}{'.' + loc if loc else ''}: {msg}")
        raise SpecError("; ".join(parts) + ".") from exc


@dataclass(frozen=True)
class Measurements:
    """What the gates are checked against, all measured on the exported bundle.

    ``audit`` is the kind's report on the data (its metrics, per-class or per-group tables).
    """

    audit: dict[str, Any]
    size_mb: float
    p95_latency_ms: float
    baseline: dict[str, Any] | None = None  # the bundle's stored ``baseline`` section (audit/baseline.py)


@dataclass(frozen=True)
class Verdict:
    """How a true/false gate came out, and why when it failed."""

    passed: bool
    note: str = ""


@dataclass(frozen=True)
class Gate:
    """One row of a gate table: the ``gates:`` key, how to measure, and which way passes.

    ``direction`` "min" passes when measured >= limit, "max" when measured <= limit, "true"
    when ``judge`` says so (the gate's limit is ``true``).
    """

    key: str
    description: str
    direction: Literal["min", "max", "true"]
    measure: Callable[[Measurements, str | None], float | None]
    per_feature: bool = False
    judge: Callable[[Measurements, str | None], Verdict] | None = None
    # a gate decided with an interval: gets the limit, returns (measured, verdict)
    decide: Callable[[Measurements, float], tuple[float | None, Verdict]] | None = None


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
        """A JSON-ready dict."""
        return self.__dict__.copy()


def _margin(m: Measurements, limit: float) -> tuple[float | None, Verdict]:
    v = margin_verdict(m.baseline, limit)
    return v.lower, Verdict(v.passed, v.note)


GATES: tuple[Gate, ...] = (
    Gate("max_p95_latency_ms", "p95 latency of one item on the Runtime (ms)", "max", lambda m, f: m.p95_latency_ms),
    Gate("max_size_mb", "bundle size: the manifest's files (MB)", "max", lambda m, f: m.size_mb),
    Gate("min_margin_over_baseline", "lower end of the CI of model - best baseline (the kind's quality metric)",
         "min", lambda m, f: None, decide=_margin),
)


def _metric(name: str) -> Callable[[Measurements, str | None], float | None]:
    def read(m: Measurements, feature: str | None) -> float | None:
        value = m.audit.get(name)
        return float(value) if isinstance(value, int | float) else None

    return read


# Rows of the classifier kinds: their ``audit`` is a :class:`aiforge.audit.metrics.Metrics` dict.
CLASSIFIER_GATES: tuple[Gate, ...] = (
    Gate("min_accuracy", "accuracy of the exported model", "min", _metric("accuracy")),
    Gate("min_macro_f1", "macro-F1 of the exported model", "min", _metric("macro_f1")),
    Gate("min_top5_accuracy", "top-5 accuracy of the exported model", "min", _metric("top5_accuracy")),
)


def gate_keys(cls: type[ReleaseGates]) -> set[str]:
    """The gate keys of a gates class (its fields less its settings)."""
    return set(cls.model_fields) - set(cls.settings)


def evaluate_gates(rows: Sequence[Gate], gates: ReleaseGates, m: Measurements,
                   features: Sequence[str]) -> list[GateResult]:
    """Check every gate of ``rows`` that ``gates`` sets; unset ones are skipped."""
    out: list[GateResult] = []
    for gate in rows:
        if not gates.is_set(gate.key):
            continue
        limit = getattr(gates, gate.key)
        for feature in (list(features) if gate.per_feature else [None]):
            if gate.decide is not None:
                lower, decided = gate.decide(m, float(limit))
                out.append(GateResult(gate.key, feature, limit, lower, decided.passed, decided.note))
                continue
            value = gate.measure(m, feature)
            if value is None:
                out.append(GateResult(gate.key, feature, limit, None, False,
                                      "not measurable (feature missing or groups too small to judge)"))
                continue
            note = ""
            if gate.direction == "min":
                ok = value >= limit
            elif gate.direction == "max":
                ok = value <= limit
            else:
                verdict = gate.judge(m, feature) if gate.judge else Verdict(False, "no judge for this gate")
                ok, note = verdict.passed, verdict.note
            if not ok and not note:
                note = f"{gate.description}: {value:.4g} {'<' if gate.direction == 'min' else '>'} {limit:g}"
            out.append(GateResult(gate.key, feature, limit, float(value), bool(ok), note))
    return out

"""Release gates: the typed ``gates:`` block every spec can carry and the table of checks ``aiforge ship`` runs.

Each :class:`Gate` row reads one number from :class:`Measurements` (the kind's report on the
exported bundle, its size, its latency on the torch-free Runtime), and where it can a confidence
interval of that number, and compares them with the spec's ``gates:`` value. The rows here (size
and latency) hold for every kind; each kind adds its own rows (quality, fairness) in its
``checks`` module, and its spec's gates block is a subclass of :class:`ReleaseGates` (or of
:class:`ClassifierGates`) with exactly those keys. Per-feature gates (fairness) run once per gated
sensitive feature.

A gate's decision (:func:`decide`) is ``pass``, ``fail`` or ``undecided``. With ``gates.decide:
upper_bound`` (the default) a "max" gate passes when the interval's upper bound is within the
limit, fails when its lower bound is beyond it, and is undecided when the limit lies inside the
interval ("min" gates mirror this); ``point`` compares the point estimate only. A gate with no
interval (size) is decided on its point. A gate whose row says its groups are too small to judge
(:attr:`Gate.undecided`) is undecided under either rule. Undecided gates fail ``ship`` unless
``gates.allow_undecided: true``.

Adding a gate (e.g. a margin over a baseline): write a :class:`Gate` row whose ``measure`` reads
the point estimate from ``Measurements.audit`` and whose ``interval`` reads its (lo, hi) bounds;
add the key to the kind's gates class; :func:`evaluate_gates` does the rest.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, ValidationError, model_validator

from aiforge.audit.baseline import margin_verdict
from aiforge.errors import SpecError
from aiforge.spec import Strict

__all__ = ["BASE_SETTINGS", "CLASSIFIER_GATES", "GATES", "GROUP_GATES", "ClassifierGates", "Decision", "Gate",
           "GateResult", "GroupGates", "Interval", "Measurements", "ReleaseGates", "Verdict", "decide",
           "evaluate_gates", "gate_keys", "group_gate", "parse_gates", "small_groups_reason"]

Decision = Literal["pass", "fail", "undecided"]
Interval = tuple[float, float]

# settings every gates block has (how gates are decided), never gates themselves
BASE_SETTINGS: frozenset[str] = frozenset({"decide", "allow_undecided"})


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
    decide: Literal["upper_bound", "point"] = "upper_bound"
    allow_undecided: bool = False

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


class GroupGates(ClassifierGates):
    """A multi-class classifier's gates plus per-group gaps over ``sensitive_features`` (text, image).

    The gaps (largest minus smallest over the groups) are of accuracy, macro-F1, TPR (macro
    recall) and FPR (macro one-vs-rest false positive rate). ``sensitive_features`` (columns of the
    data) and ``min_group_size`` (smaller groups make the gates undecided) are settings.
    """

    settings: ClassVar[frozenset[str]] = frozenset({"sensitive_features", "min_group_size"})

    max_accuracy_difference: float | None = Field(default=None, ge=0, le=1)
    max_macro_f1_difference: float | None = Field(default=None, ge=0, le=1)
    max_tpr_difference: float | None = Field(default=None, ge=0, le=1)
    max_fpr_difference: float | None = Field(default=None, ge=0, le=1)
    sensitive_features: list[str] | None = None
    min_group_size: int = Field(default=30, gt=0)


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
    p95_latency_interval: Interval | None = None
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
    when ``judge`` says so (the gate's limit is ``true``); a "true" gate with ``fixed_limit`` is
    decided as a "min" gate against that number (the four-fifths rule: ratio >= 0.8), and
    ``judge`` then only explains a failure. ``interval`` reads the (lo, hi) confidence bounds of
    the measured value; ``undecided`` returns why the gate cannot be judged (groups too small),
    or ``None``.
    """

    key: str
    description: str
    direction: Literal["min", "max", "true"]
    measure: Callable[[Measurements, str | None], float | None]
    per_feature: bool = False
    judge: Callable[[Measurements, str | None], Verdict] | None = None
    interval: Callable[[Measurements, str | None], Interval | None] | None = None
    undecided: Callable[[Measurements, str | None], str | None] | None = None
    fixed_limit: float | None = None


@dataclass(frozen=True)
class GateResult:
    """A checked gate: limit, point estimate, interval, decision and whether it lets the bundle ship.

    ``passed`` is ``decision == "pass"``, or an undecided gate under ``gates.allow_undecided``;
    ``measured`` ``None`` means the value could not be measured (a failure).
    """

    key: str
    feature: str | None
    limit: float | bool
    measured: float | None
    passed: bool
    note: str = ""
    interval: list[float] | None = None
    decision: Decision = "fail"
    rule: str = "upper_bound"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return self.__dict__.copy()


def decide(direction: Literal["min", "max"], value: float, interval: Interval | None, limit: float,
           rule: str) -> Decision:
    """``pass``/``fail``/``undecided`` of one number against ``limit`` (see the module docstring)."""
    if rule == "point" or interval is None or not all(np.isfinite(interval)):
        ok = value >= limit if direction == "min" else value <= limit
        return "pass" if ok else "fail"
    lo, hi = interval
    if direction == "max":
        return "pass" if hi <= limit else "fail" if lo > limit else "undecided"
    return "pass" if lo >= limit else "fail" if hi < limit else "undecided"


def _latency_interval(m: Measurements, feature: str | None) -> Interval | None:
    return m.p95_latency_interval


def _measured_baseline(m: Measurements) -> dict[str, Any] | None:
    b = m.baseline
    if not b or b.get("skipped") or b.get("difference") is None or not b.get("interval"):
        return None
    return b


def _margin(m: Measurements, feature: str | None) -> float | None:
    b = _measured_baseline(m)
    return None if b is None else float(b["difference"])


def _margin_interval(m: Measurements, feature: str | None) -> Interval | None:
    b = _measured_baseline(m)
    return None if b is None else (float(b["interval"][0]), float(b["interval"][1]))


def _margin_note(m: Measurements, feature: str | None) -> Verdict:
    """Why the margin could not be measured (no baseline stored, skipped, no test split), for the note."""
    v = margin_verdict(m.baseline, 0.0)
    return Verdict(v.passed, v.note if v.lower is None else "")


GATES: tuple[Gate, ...] = (
    Gate("max_p95_latency_ms", "p95 latency of one item on the Runtime (ms)", "max", lambda m, f: m.p95_latency_ms,
         interval=_latency_interval),
    Gate("max_size_mb", "bundle size: the manifest's files (MB)", "max", lambda m, f: m.size_mb),
    Gate("min_margin_over_baseline", "model - best baseline on test (the kind's quality metric)", "min", _margin,
         judge=_margin_note, interval=_margin_interval),
)


def _metric(name: str) -> Callable[[Measurements, str | None], float | None]:
    def read(m: Measurements, feature: str | None) -> float | None:
        value = m.audit.get(name)
        return float(value) if isinstance(value, int | float) else None

    return read


def _metric_interval(name: str) -> Callable[[Measurements, str | None], Interval | None]:
    def read(m: Measurements, feature: str | None) -> Interval | None:
        return _pair(m.audit.get("intervals", {}).get(name))

    return read


def _pair(value: Any) -> Interval | None:
    if isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(v, int | float) for v in value):
        return float(value[0]), float(value[1])
    return None


# Rows of the classifier kinds: their ``audit`` is a :class:`aiforge.audit.metrics.Metrics` dict, with
# ``intervals`` (bootstrap for accuracy and macro-F1, Wilson for top-5) when the kind measured them.
CLASSIFIER_GATES: tuple[Gate, ...] = (
    Gate("min_accuracy", "accuracy of the exported model", "min", _metric("accuracy"),
         interval=_metric_interval("accuracy")),
    Gate("min_macro_f1", "macro-F1 of the exported model", "min", _metric("macro_f1"),
         interval=_metric_interval("macro_f1")),
    Gate("min_top5_accuracy", "top-5 accuracy of the exported model", "min", _metric("top5_accuracy"),
         interval=_metric_interval("top5_accuracy")),
)


def _group_value(key: str) -> Callable[[Measurements, str | None], float | None]:
    def read(m: Measurements, feature: str | None) -> float | None:
        value = m.audit.get("features", {}).get(feature or "", {}).get(key)
        return float(value) if isinstance(value, int | float) else None

    return read


def _group_interval(key: str) -> Callable[[Measurements, str | None], Interval | None]:
    def read(m: Measurements, feature: str | None) -> Interval | None:
        return _pair(m.audit.get("features", {}).get(feature or "", {}).get("intervals", {}).get(key))

    return read


def small_groups_reason(m: Measurements, feature: str | None) -> str | None:
    """Why the per-group gates of ``feature`` are undecided: its groups below ``min_group_size``, or ``None``."""
    feat = m.audit.get("features", {}).get(feature or "")
    if not isinstance(feat, dict) or not feat.get("small_groups"):
        return None
    counts = {g: int(feat["groups"][g]["count"]) for g in feat["small_groups"] if g in feat.get("groups", {})}
    shown = ", ".join(f"{g!r} ({n} rows)" for g, n in counts.items())
    return f"group(s) {shown} below min_group_size {feat.get('min_group_size')}: too small to judge"


def group_gate(key: str, description: str, value: str) -> Gate:
    """A per-feature "max" gate on the gap ``value`` of an audit's ``features`` (with its interval)."""
    return Gate(key, description, "max", _group_value(value), per_feature=True, interval=_group_interval(value),
                undecided=small_groups_reason)


# Per-group gaps of a multi-class classifier (``audit["features"]`` of audit_accuracy_by_group).
GROUP_GATES: tuple[Gate, ...] = (
    group_gate("max_accuracy_difference", "accuracy difference between groups", "accuracy_difference"),
    group_gate("max_macro_f1_difference", "macro-F1 difference between groups", "macro_f1_difference"),
    group_gate("max_tpr_difference", "TPR (macro recall) difference between groups", "tpr_difference"),
    group_gate("max_fpr_difference", "FPR (macro one-vs-rest) difference between groups", "fpr_difference"),
)


def gate_keys(cls: type[ReleaseGates]) -> set[str]:
    """The gate keys of a gates class (its fields less its settings and the decision settings)."""
    return set(cls.model_fields) - set(cls.settings) - BASE_SETTINGS


def evaluate_gates(rows: Sequence[Gate], gates: ReleaseGates, m: Measurements,
                   features: Sequence[str]) -> list[GateResult]:
    """Check every gate of ``rows`` that ``gates`` sets (unset ones are skipped), by ``gates.decide``."""
    out: list[GateResult] = []
    rule = gates.decide
    for gate in rows:
        if not gates.is_set(gate.key):
            continue
        limit = getattr(gates, gate.key)
        for feature in (list(features) if gate.per_feature else [None]):
            out.append(_check(gate, limit, feature, m, rule, gates.allow_undecided))
    return out


def _check(gate: Gate, limit: Any, feature: str | None, m: Measurements, rule: str,
           allow_undecided: bool) -> GateResult:
    value = gate.measure(m, feature)
    interval = gate.interval(m, feature) if gate.interval else None
    iv = [interval[0], interval[1]] if interval is not None else None
    small = gate.undecided(m, feature) if gate.undecided else None
    if small is not None:
        return GateResult(gate.key, feature, limit, value, allow_undecided, small, iv, "undecided", rule)
    if value is None:
        why = gate.judge(m, feature).note if gate.judge else ""
        return GateResult(gate.key, feature, limit, None, False,
                          why or "not measurable (feature missing or groups too small to judge)", None, "fail", rule)
    note = ""
    if gate.direction == "true" and gate.fixed_limit is None:
        verdict = gate.judge(m, feature) if gate.judge else Verdict(False, "no judge for this gate")
        decision: Decision = "pass" if verdict.passed else "fail"
        note = verdict.note
    else:
        direction: Literal["min", "max"] = "min" if gate.direction == "true" else gate.direction
        bound = float(gate.fixed_limit if gate.direction == "true" and gate.fixed_limit is not None else limit)
        decision = decide(direction, float(value), interval, bound, rule)
        ci = f" (CI {interval[0]:.4g}-{interval[1]:.4g})" if interval is not None and rule != "point" else ""
        if decision == "undecided":
            note = f"{gate.description}: limit {bound:g} lies inside the interval{ci}; more data needed to decide"
        elif decision == "fail":
            if gate.judge is not None:
                note = gate.judge(m, feature).note
            if not note:
                side = "<" if direction == "min" else ">"
                whole = ", the whole interval" if ci else ""
                note = f"{gate.description}: {value:.4g}{ci}{whole} {side} {bound:g}"
    passed = decision == "pass" or (decision == "undecided" and allow_undecided)
    return GateResult(gate.key, feature, limit, float(value), passed, note, iv, decision, rule)

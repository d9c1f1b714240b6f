"""Which bias mitigation ships: every candidate and "none" scored on validation, then one rule picks.

The rule (``audit.mitigation``): among the candidates that improve the targeted gap on "none",
lose at most ``max_accuracy_loss`` accuracy and worsen no other fairness gap (DP, EO difference)
by more than ``max_side_effect``, ship the one with the smallest targeted gap; if none qualifies,
ship "none". Every candidate's verdict is kept as a sentence, so the card and report can say why.
All of it reads validation numbers only; the held-out test split is never consulted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from aiforge.audit.fairness import AuditSettings, audit_predictions

__all__ = ["FAIRNESS_GAPS", "MitigationChoice", "choose_mitigation", "score_predictions"]

FAIRNESS_GAPS = ("demographic_parity_difference", "equalized_odds_difference")
_SHORT = {"demographic_parity_difference": "DP difference", "equalized_odds_difference": "EO difference"}


def score_predictions(y: np.ndarray, p: np.ndarray, groups: np.ndarray | None, feature: str | None,
                      settings: AuditSettings) -> dict[str, Any]:
    """Accuracy, ROC AUC, selection rate, DP and EO differences of probabilities ``p``, with intervals.

    Gaps are over groups of at least ``settings.min_group_size`` rows (bootstrap intervals);
    ``rows_per_group`` says how many rows each group had.
    """
    pred = (p > 0.5).astype(np.int64)
    frame = pd.DataFrame({feature: groups}) if feature is not None and groups is not None else pd.DataFrame()
    report = audit_predictions(y, pred, p, frame, AuditSettings(
        min_group_size=settings.min_group_size, bootstrap=settings.bootstrap, confidence=settings.confidence,
        intersections=False, seed=settings.seed))
    o = report["overall"]
    out: dict[str, Any] = {"n": o["n"], "accuracy": o["accuracy"], "roc_auc": o["roc_auc"],
                           "selection_rate": o["selection_rate"],
                           "intervals": {"accuracy": o["intervals"].get("accuracy")}}
    if feature is not None:
        feat = report["features"][feature]
        out["rows_per_group"] = {g: int(r["count"]) for g, r in feat["groups"].items()}
        for gap in FAIRNESS_GAPS:
            if gap in feat:
                out[gap] = feat[gap]
                out["intervals"][gap] = feat.get("intervals", {}).get(gap)
    return out


@dataclass(frozen=True)
class MitigationChoice:
    """What the rule picked (``rule_choice``), what ships (``chosen``: differs only under ``pick: first``), why."""

    chosen: str
    rule_choice: str
    reason: str
    target: str
    verdicts: dict[str, str]
    validation: dict[str, dict[str, Any]] = field(default_factory=dict)
    max_accuracy_loss: float = 0.02
    max_side_effect: float = 0.02
    pick: str = "best"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``metrics.json`` ``mitigation_choice``)."""
        return dict(self.__dict__)


def choose_mitigation(validation: dict[str, dict[str, Any]], *, candidates: list[str], target: str,
                      max_accuracy_loss: float, max_side_effect: float, pick: str = "best") -> MitigationChoice:
    """Apply the rule of the module docstring to the validation scores (``validation["none"]`` included)."""
    base = validation["none"]
    others = [g for g in FAIRNESS_GAPS if g != target]
    verdicts: dict[str, str] = {"none": "the unmitigated model: the reference every candidate must beat"}
    eligible: list[str] = []
    for m in candidates:
        v = validation[m]
        problems = []
        if target not in v or target not in base:
            problems.append(f"{_SHORT[target]} not measurable on validation (groups too small)")
        elif v[target] >= base[target]:
            problems.append(f"{_SHORT[target]} {v[target]:.4f} does not improve on none's {base[target]:.4f}")
        loss = base["accuracy"] - v["accuracy"]
        if loss > max_accuracy_loss:
            problems.append(f"loses {loss:.4f} accuracy (> max_accuracy_loss {max_accuracy_loss:g})")
        for g in others:
            if g in v and g in base and v[g] - base[g] > max_side_effect:
                problems.append(f"worsens {_SHORT[g]} by {v[g] - base[g]:.4f} ({base[g]:.4f} -> {v[g]:.4f}; "
                                f"> max_side_effect {max_side_effect:g})")
        if problems:
            verdicts[m] = "rejected: " + "; ".join(problems)
        else:
            eligible.append(m)
            side = ", ".join(f"{_SHORT[g]} {v[g] - base[g]:+.4f}" for g in others if g in v and g in base)
            verdicts[m] = (f"eligible: {_SHORT[target]} {v[target]:.4f} vs none's {base[target]:.4f}, accuracy "
                           f"{-loss:+.4f}{', ' + side if side else ''}")
    if eligible:
        best = min(eligible, key=lambda m: validation[m][target])
        reason = (f"{best} ships: the smallest validation {_SHORT[target]} ({validation[best][target]:.4f}, none "
                  f"{base[target]:.4f}) among candidates within max_accuracy_loss {max_accuracy_loss:g} and "
                  f"max_side_effect {max_side_effect:g}")
    else:
        best = "none"
        reason = ("none ships: no candidate improved the validation "
                  f"{_SHORT[target]} within max_accuracy_loss {max_accuracy_loss:g} and max_side_effect "
                  f"{max_side_effect:g}" + ("" if candidates else " (no candidates listed)"))
    chosen = best
    if pick == "first" and candidates:
        chosen = candidates[0]
        if chosen != best:
            reason = (f"{chosen} ships because audit.mitigation.pick is 'first'; the rule would have shipped "
                      f"{best} ({reason})")
    return MitigationChoice(chosen, best, reason, target, verdicts, validation, max_accuracy_loss, max_side_effect,
                            pick)

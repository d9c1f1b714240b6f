"""Out-of-scope detection for intent classifiers (numpy only): the calibrated threshold and its curve.

The score of a text is its Mahalanobis distance (shared, shrunk covariance) from the
nearest class mean of its sentence embedding (Podolskiy et al., 2021: stronger than the
softmax probability for out-of-domain intents), optionally mixed with the classifier's top
probability. A text is out of scope when its score is above the threshold. The threshold
is calibrated on held-out in-scope texts to keep ``target_in_scope_recall`` of them, or,
when out-of-scope examples are given, to maximise the mean of in-scope accuracy and
out-of-scope recall among thresholds keeping at least that recall. The text-classification
task and the chat intent layer share this module; the scorer itself, which bundles
apply at serve time, is :class:`aiforge.bundle.out_of_scope.DistanceScorer`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["calibrate_rejection", "rejection_curve"]


def rejection_curve(in_scores: np.ndarray, correct: np.ndarray, oos_scores: np.ndarray | None,
                    thresholds: Sequence[float]) -> list[dict[str, float | None]]:
    """For each threshold: in-scope accepted, in-scope accuracy (accepted and right), out-of-scope recall."""
    out: list[dict[str, float | None]] = []
    for t in thresholds:
        accepted = in_scores <= t
        out.append({"threshold": float(t), "in_scope_accepted": float(accepted.mean()),
                    "in_scope_accuracy": float((accepted & correct).mean()),
                    "out_of_scope_recall": None if oos_scores is None or not len(oos_scores)
                    else float((oos_scores > t).mean())})
    return out


def calibrate_rejection(in_scores: np.ndarray, correct: np.ndarray, oos_scores: np.ndarray | None, *,
                        target_in_scope_recall: float, points: int = 21) -> dict[str, Any]:
    """The threshold on held-out scores, how it was chosen, and the trade-off curve around it."""
    in_scores = np.asarray(in_scores, dtype=np.float64)
    q = float(np.quantile(in_scores, target_in_scope_recall)) if target_in_scope_recall < 1 else \
        float(in_scores.max())
    threshold, method = q, f"keep {target_in_scope_recall:.0%} of held-out in-scope texts"
    if oos_scores is not None and len(oos_scores):
        grid = np.unique(np.concatenate([in_scores, oos_scores]))
        grid = grid[grid >= q]  # never below the recall target
        if len(grid):
            value = [0.5 * float(((in_scores <= t) & correct).mean()) + 0.5 * float((oos_scores > t).mean())
                     for t in grid]
            threshold = float(grid[int(np.argmax(value))])
            method = (f"max mean of in-scope accuracy and out-of-scope recall, keeping at least "
                      f"{target_in_scope_recall:.0%} of held-out in-scope texts")
    qs = np.quantile(in_scores, np.linspace(0.5, 1.0, points))
    curve = rejection_curve(in_scores, correct, oos_scores, sorted({*qs.tolist(), threshold}))
    at = rejection_curve(in_scores, correct, oos_scores, [threshold])[0]
    return {"threshold": threshold, "method": method, "target_in_scope_recall": target_in_scope_recall,
            "held_out_in_scope": len(in_scores), "held_out_out_of_scope": 0 if oos_scores is None else len(oos_scores),
            **{k: v for k, v in at.items() if k != "threshold"}, "curve": curve}

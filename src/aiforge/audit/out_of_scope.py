"""Out-of-scope detection for intent classifiers (numpy only): a distance score, a calibrated threshold, a curve.

The score of a text is its Mahalanobis distance (shared, shrunk covariance) from the
nearest class mean of its sentence embedding (Podolskiy et al., 2021: stronger than the
softmax probability for out-of-domain intents), optionally mixed with the classifier's top
probability. A text is out of scope when its score is above the threshold. The threshold
is calibrated on held-out in-scope texts to keep ``target_in_scope_recall`` of them, or,
when out-of-scope examples are given, to maximise the mean of in-scope accuracy and
out-of-scope recall among thresholds keeping at least that recall. The text-classification
task and the chat intent layer share this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["DistanceScorer", "calibrate_rejection", "rejection_curve"]


@dataclass
class DistanceScorer:
    """Class means and a shared precision matrix; ``score`` is the distance to the nearest mean."""

    means: np.ndarray  # [n_labels, dim]
    precision: np.ndarray  # [dim, dim]

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, n_labels: int, *, shrinkage: float | None = None) -> DistanceScorer:
        """Means per label and the inverse of the pooled within-class covariance, shrunk towards its trace
        (by ``dim / (dim + n)`` unless given: few examples give a near-Euclidean distance)."""
        x = np.asarray(x, dtype=np.float64)
        dim = x.shape[1]
        if shrinkage is None:
            shrinkage = float(np.clip(dim / (dim + len(x)), 0.05, 1.0))
        means = np.zeros((n_labels, dim))
        centred = np.zeros_like(x)
        for c in range(n_labels):
            rows = y == c
            if rows.any():
                means[c] = x[rows].mean(axis=0)
                centred[rows] = x[rows] - means[c]
        cov = centred.T @ centred / max(1, len(x) - n_labels)
        cov = (1 - shrinkage) * cov + shrinkage * np.trace(cov) / dim * np.eye(dim)
        return cls(means.astype(np.float32), np.linalg.inv(cov).astype(np.float32))

    def score(self, x: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance of each row to its nearest class mean (higher = more out of scope)."""
        x = np.asarray(x, dtype=np.float32)
        xp = x @ self.precision
        # |x - m|^2_P = x P x - 2 x P m + m P m, for every class at once
        xx = np.einsum("ij,ij->i", xp, x)
        mm = np.einsum("ij,ij->i", self.means @ self.precision, self.means)
        d = xx[:, None] - 2 * xp @ self.means.T + mm[None, :]
        return np.asarray(d.min(axis=1), dtype=np.float32)


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

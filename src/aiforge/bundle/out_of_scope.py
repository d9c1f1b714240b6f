"""The out-of-scope scorers a text or chat runtime applies at serve time (numpy only).

The score of a text is its squared Mahalanobis distance (shared, shrunk covariance) from the nearest
class mean of its sentence embedding (Podolskiy et al., 2021). Fitting it and calibrating its threshold
are training-time work, in :mod:`aiforge.audit.out_of_scope`; this module is what a bundle needs to score.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DistanceScorer", "NearestScorer"]


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


@dataclass
class NearestScorer:
    """Unit vectors of the training examples; ``score`` is one minus the cosine to the nearest one."""

    examples: np.ndarray  # [n, dim], unit rows

    @classmethod
    def fit(cls, x: np.ndarray) -> NearestScorer:
        x = np.asarray(x, dtype=np.float32)
        return cls(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12))

    def score(self, x: np.ndarray) -> np.ndarray:
        """``1 - max cos`` of each row to the examples (higher = more out of scope), in blocks of 4096 examples."""
        x = np.asarray(x, dtype=np.float32)
        u = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        best = np.full(len(u), -1.0, dtype=np.float32)
        for i in range(0, len(self.examples), 4096):
            best = np.maximum(best, (u @ self.examples[i:i + 4096].T).max(axis=1))
        return np.asarray(1.0 - best, dtype=np.float32)

"""How every recommender scores: a weighted sum of row-normalised components.

A model is a :class:`ScoringParts`: user factors x item factors (ALS, BPR), history x an
item-item matrix over a catalogue (item-kNN, EASE), a content profile x item embeddings, and
an item bias (popularity). Each component is divided by the absolute value of its row's top score,
weighted, summed; a popularity penalty may be subtracted (re-ranking); seen items are
masked. The ONNX graph (:mod:`aiforge.tasks.recommend.graph`) computes exactly this, so
what is evaluated is what is served. This module needs only numpy and scipy.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from scipy import sparse

__all__ = ["EXCLUDED", "OUTSIDE", "ScoringParts", "popularity_penalty", "score_rows", "top_k"]


OUTSIDE = -1e4  # score of items an item-item model cannot rank (outside its catalogue)


EXCLUDED = -1e9  # score of masked items (seen, filtered out)


_EPS = 1e-9


@dataclass(frozen=True)
class ScoringParts:
    """The arrays (in catalogue item order) and weights that define one fitted recommender."""

    n_items: int
    penalty: np.ndarray  # (n,) popularity penalty direction in [0, 1]
    factors: np.ndarray | None = None  # V (n, d)
    user_factors: np.ndarray | None = None  # U (n_users, d), for known users
    item_item: np.ndarray | None = None  # B (c, c) over ``catalogue``
    catalogue: np.ndarray | None = None  # (c,) item indices of B's rows and columns
    impute_nbrs: np.ndarray | None = None  # (n - c, K) positions in catalogue: cold items' neighbours
    impute_weights: np.ndarray | None = None  # (n - c, K)
    content: np.ndarray | None = None  # E (n, dim), rows L2-normalised
    bias: np.ndarray | None = None  # (n,)
    weights: dict[str, float] = field(default_factory=dict)
    popularity_penalty: float = 0.0
    fold_in: dict[str, float] = field(default_factory=dict)  # how new users get factors

    def with_penalty(self, penalty: float) -> ScoringParts:
        """The same model re-ranked with another popularity penalty."""
        return replace(self, popularity_penalty=float(penalty))

    def rest(self) -> np.ndarray:
        """Items outside the item-item catalogue, in index order."""
        if self.catalogue is None:
            return np.zeros(0, dtype=np.int64)
        inside = np.zeros(self.n_items, dtype=bool)
        inside[self.catalogue] = True
        return np.flatnonzero(~inside)


def popularity_penalty(counts: np.ndarray) -> np.ndarray:
    """log(1 + count) / log(1 + max count): 0 for unseen items, 1 for the most popular."""
    top = np.log1p(max(float(counts.max()), 1.0))
    out: np.ndarray = (np.log1p(counts.astype(np.float64)) / top).astype(np.float32)
    return out


def _norm(x: np.ndarray) -> np.ndarray:
    """Divide each row by |its top score| (a positive scale, so the row's ranking is unchanged)."""
    out: np.ndarray = x / (np.abs(x.max(axis=1, keepdims=True)) + _EPS)
    return out


def score_rows(parts: ScoringParts, history: sparse.csr_matrix | np.ndarray,
               user_vectors: np.ndarray | None = None) -> np.ndarray:
    """Scores (b, n) for users given their histories (b, n) and, for factor models, vectors (b, d)."""
    hist = history.toarray() if isinstance(history, sparse.spmatrix) else np.asarray(history)
    hist = hist.astype(np.float32, copy=False)
    b, n = hist.shape
    total = np.zeros((b, n), dtype=np.float32)
    w = parts.weights
    if parts.factors is not None and w.get("factors", 0):
        if user_vectors is None:
            raise ValueError("factor model needs user vectors")
        total += w["factors"] * _norm(user_vectors.astype(np.float32) @ parts.factors.T)
    if parts.item_item is not None and parts.catalogue is not None and w.get("item_item", 0):
        cat = _norm(hist[:, parts.catalogue] @ parts.item_item)
        full = np.full((b, n), OUTSIDE, dtype=np.float32)
        full[:, parts.catalogue] = cat
        if parts.impute_nbrs is not None and parts.impute_weights is not None:
            full[:, parts.rest()] = (cat[:, parts.impute_nbrs] * parts.impute_weights).sum(axis=2)
        total += w["item_item"] * full
    if parts.content is not None and w.get("content", 0):
        profile = hist @ parts.content
        profile /= np.linalg.norm(profile, axis=1, keepdims=True) + _EPS
        total += w["content"] * _norm(profile @ parts.content.T)
    if parts.bias is not None and w.get("bias", 0):
        total += w["bias"] * (parts.bias / (abs(parts.bias.max()) + _EPS))[None, :]
    if parts.popularity_penalty:
        total -= np.float32(parts.popularity_penalty) * parts.penalty[None, :]
    return total


def top_k(scores: np.ndarray, exclude: sparse.csr_matrix | np.ndarray | None, k: int) -> np.ndarray:
    """Indices (b, k) of the k best items per row, best first, with ``exclude`` (b, n) masked."""
    s = scores.copy()
    if exclude is not None:
        mask = exclude.toarray() if isinstance(exclude, sparse.spmatrix) else np.asarray(exclude)
        s[mask > 0] = EXCLUDED
    k = min(k, s.shape[1])
    part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(s, part, axis=1), axis=1, kind="stable")
    best: np.ndarray = np.take_along_axis(part, order, axis=1)
    return best

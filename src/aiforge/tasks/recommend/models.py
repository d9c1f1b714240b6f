"""The recommenders, each fitted into :class:`ScoringParts`.

- ``popularity``: how many users liked each item (the baseline every model must beat);
- ``als``, ``bpr``: matrix factorisation through the ``implicit`` library;
- ``item-knn``: implicit's cosine / BM25 item-item neighbours, over the catalogue;
- ``ease``: closed-form item-item regression (Steck 2019), over the catalogue of items
  with at least ``min_item_positives`` positives (a dense c x c matrix; 4 bytes each);
- ``content``: a user's liked items' MiniLM embeddings averaged into a profile, cosine to
  every item, plus a tuned popularity prior;
- ``hybrid``: EASE blended with content; items outside EASE's catalogue (never or rarely
  liked) get EASE scores imputed from their nearest catalogue items in content space.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse

from aiforge.errors import SpecError
from aiforge.tasks.recommend.scoring import ScoringParts, popularity_penalty

__all__ = ["DEFAULT_GRIDS", "FitContext", "fit_parts"]


DEFAULT_GRIDS: dict[str, dict[str, list[Any]]] = {
    "popularity": {},
    "als": {"factors": [64, 128], "regularization": [0.05, 0.5], "alpha": [2.0, 10.0], "iterations": [15]},
    "bpr": {"factors": [64, 128], "learning_rate": [0.01, 0.05], "regularization": [0.01], "iterations": [100]},
    "item-knn": {"similarity": ["cosine", "bm25"], "K": [20, 100]},
    "ease": {"l2": [100.0, 250.0, 500.0, 1000.0]},
    "content": {"popularity_weight": [0.0, 0.5, 1.0, 2.0]},
    "hybrid": {"content_weight": [0.05, 0.1], "impute_scale": [0.25, 0.5]},
}


@dataclass(frozen=True)
class FitContext:
    """What a fit may use besides the interaction matrix."""

    embeddings: np.ndarray | None  # (n, dim) L2-normalised item text embeddings
    min_item_positives: int = 2
    threads: int | None = None
    seed: int = 0
    impute_neighbours: int = 10


def _counts(x: sparse.csr_matrix) -> np.ndarray:
    return np.asarray(x.sum(axis=0)).ravel().astype(np.float32)


def _catalogue(x: sparse.csr_matrix, minimum: int) -> np.ndarray:
    cat = np.flatnonzero(_counts(x) >= minimum)
    if len(cat) < 2:
        raise SpecError(f"only {len(cat)} items have {minimum} or more positives; lower model.min_item_positives.")
    return cat


def _implicit(build: Callable[[], Any], x: sparse.csr_matrix) -> Any:
    """Fit an implicit model with BLAS single-threaded (implicit parallelises itself)."""
    from threadpoolctl import threadpool_limits

    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    with threadpool_limits(1, "blas"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Method expects CSR input")
        model = build()
        model.fit(x.tocsr(), show_progress=False)
    return model


def _popularity(x: sparse.csr_matrix, p: dict[str, Any], ctx: FitContext) -> ScoringParts:
    counts = _counts(x)
    return ScoringParts(n_items=x.shape[1], penalty=popularity_penalty(counts), bias=counts, weights={"bias": 1.0})


def _als(x: sparse.csr_matrix, p: dict[str, Any], ctx: FitContext) -> ScoringParts:
    from implicit.cpu.als import AlternatingLeastSquares

    alpha = float(p.get("alpha", 1.0))
    reg = float(p.get("regularization", 0.05))
    model = _implicit(lambda: AlternatingLeastSquares(
        factors=int(p.get("factors", 64)), regularization=reg, alpha=alpha,
        iterations=int(p.get("iterations", 15)), num_threads=ctx.threads or 0, random_state=ctx.seed), x)
    return ScoringParts(n_items=x.shape[1], penalty=popularity_penalty(_counts(x)),
                        factors=np.asarray(model.item_factors, dtype=np.float32),
                        user_factors=np.asarray(model.user_factors, dtype=np.float32), weights={"factors": 1.0},
                        fold_in={"kind": 1.0, "alpha": alpha, "regularization": reg})


def _bpr(x: sparse.csr_matrix, p: dict[str, Any], ctx: FitContext) -> ScoringParts:
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    model = _implicit(lambda: BayesianPersonalizedRanking(
        factors=int(p.get("factors", 64)), learning_rate=float(p.get("learning_rate", 0.01)),
        regularization=float(p.get("regularization", 0.01)), iterations=int(p.get("iterations", 100)),
        num_threads=ctx.threads or 0, random_state=ctx.seed), x)
    # implicit's BPR keeps the item bias as the last factor (the user side holds a 1 there)
    return ScoringParts(n_items=x.shape[1], penalty=popularity_penalty(_counts(x)),
                        factors=np.asarray(model.item_factors, dtype=np.float32),
                        user_factors=np.asarray(model.user_factors, dtype=np.float32), weights={"factors": 1.0},
                        fold_in={"kind": 2.0})


def _item_knn(x: sparse.csr_matrix, p: dict[str, Any], ctx: FitContext) -> ScoringParts:
    from implicit.nearest_neighbours import BM25Recommender, CosineRecommender

    cat = _catalogue(x, ctx.min_item_positives)
    k = int(p.get("K", 50))
    kind = str(p.get("similarity", "cosine"))
    if kind not in ("cosine", "bm25"):
        raise SpecError(f"model.grid.similarity: expected 'cosine' or 'bm25', got {kind!r}.")
    build = (lambda: CosineRecommender(K=k, num_threads=ctx.threads or 0)) if kind == "cosine" else (
        lambda: BM25Recommender(K=k, num_threads=ctx.threads or 0))
    model = _implicit(build, x[:, cat])
    sim = model.similarity.T.toarray().astype(np.float32)  # implicit scores user_items @ similarity.T
    return ScoringParts(n_items=x.shape[1], penalty=popularity_penalty(_counts(x)), item_item=sim, catalogue=cat,
                        weights={"item_item": 1.0})


def ease_matrix(x: sparse.csr_matrix, l2: float) -> np.ndarray:
    """EASE's item-item weights: B = I - P diag(1/diag(P)), P = (X'X + l2 I)^-1, zero diagonal."""
    gram = (x.T @ x).toarray().astype(np.float64)
    gram[np.diag_indices_from(gram)] += l2
    inv = np.linalg.inv(gram)
    b: np.ndarray = -inv / np.diag(inv)[None, :]
    np.fill_diagonal(b, 0.0)
    return b.astype(np.float32)


def _ease(x: sparse.csr_matrix, p: dict[str, Any], ctx: FitContext) -> ScoringParts:
    cat = _catalogue(x, ctx.min_item_positives)
    return ScoringParts(n_items=x.shape[1], penalty=popularity_penalty(_counts(x)),
                        item_item=ease_matrix(x[:, cat], float(p.get("l2", 500.0))), catalogue=cat,
                        weights={"item_item": 1.0})


def _need_embeddings(ctx: FitContext, name: str) -> np.ndarray:
    if ctx.embeddings is None:
        raise SpecError(f"model {name!r} needs item text; give an item table (data.items) with a title or text.")
    return ctx.embeddings


def _content(x: sparse.csr_matrix, p: dict[str, Any], ctx: FitContext) -> ScoringParts:
    counts = _counts(x)
    return ScoringParts(n_items=x.shape[1], penalty=popularity_penalty(counts),
                        content=_need_embeddings(ctx, "content"), bias=np.log1p(counts),
                        weights={"content": 1.0, "bias": float(p.get("popularity_weight", 0.0))})


def impute_neighbours(emb: np.ndarray, cat: np.ndarray, rest: np.ndarray, k: int,
                      sharpness: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """For each item outside ``cat``: its ``k`` most similar catalogue items (positions) and
    softmax weights of their cosine similarities."""
    k = min(k, len(cat))
    nbrs = np.zeros((len(rest), k), dtype=np.int64)
    weights = np.zeros((len(rest), k), dtype=np.float32)
    for start in range(0, len(rest), 2048):
        sim = emb[rest[start:start + 2048]] @ emb[cat].T
        idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        s = np.take_along_axis(sim, idx, axis=1) * sharpness
        e = np.exp(s - s.max(axis=1, keepdims=True))
        nbrs[start:start + 2048] = idx
        weights[start:start + 2048] = e / e.sum(axis=1, keepdims=True)
    return nbrs, weights


def _hybrid(x: sparse.csr_matrix, p: dict[str, Any], ctx: FitContext) -> ScoringParts:
    emb = _need_embeddings(ctx, "hybrid")
    ease = _ease(x, p, ctx)
    assert ease.catalogue is not None  # set by _ease
    nbrs, weights = impute_neighbours(emb, ease.catalogue, ease.rest(), ctx.impute_neighbours)
    weights *= float(p.get("impute_scale", 0.5))  # imputed scores count for less than observed ones
    wc = float(p.get("content_weight", 0.2))
    return ScoringParts(n_items=x.shape[1], penalty=ease.penalty, item_item=ease.item_item, catalogue=ease.catalogue,
                        impute_nbrs=nbrs, impute_weights=weights, content=emb,
                        weights={"item_item": 1.0 - wc, "content": wc})


FITTERS: dict[str, Callable[[sparse.csr_matrix, dict[str, Any], FitContext], ScoringParts]] = {
    "popularity": _popularity, "als": _als, "bpr": _bpr, "item-knn": _item_knn, "ease": _ease,
    "content": _content, "hybrid": _hybrid,
}


def fit_parts(algorithm: str, x: sparse.csr_matrix, params: dict[str, Any], ctx: FitContext) -> ScoringParts:
    """Fit ``algorithm`` with ``params`` on the user x item positives ``x``.

    Raises:
        SpecError: unknown algorithm, a bad parameter, or a model that needs item text without it.
    """
    try:
        fitter = FITTERS[algorithm]
    except KeyError:
        raise SpecError(f"model.algorithm: unknown {algorithm!r}; known: {', '.join(FITTERS)}.") from None
    return fitter(x, params, ctx)

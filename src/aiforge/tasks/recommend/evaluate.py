"""Score, rank and evaluate fitted recommenders; tune them on a validation split."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse

from aiforge.tasks.recommend.metrics import RankingMetrics, ranking_metrics
from aiforge.tasks.recommend.models import DEFAULT_GRIDS, FitContext, fit_parts
from aiforge.tasks.recommend.scoring import ScoringParts, score_rows, top_k

__all__ = ["ColdStart", "Trial", "cold_start_hit_rate", "evaluate_parts", "recommend_rows", "tune"]


def recommend_rows(parts: ScoringParts, history: sparse.csr_matrix, users: np.ndarray, k: int, *,
                   exclude: sparse.csr_matrix | None = None, candidates: np.ndarray | None = None,
                   chunk: int = 256) -> np.ndarray:
    """Top-k item indices (len(users), k) for known ``users`` (rows of ``history``), seen items masked.

    ``candidates``, if given, restricts the ranking to those items (others are masked).
    """
    exclude = history if exclude is None else exclude
    out = np.zeros((len(users), k), dtype=np.int64)
    allowed = None
    if candidates is not None:
        allowed = np.ones(history.shape[1], dtype=bool)
        allowed[candidates] = False
    for start in range(0, len(users), chunk):
        rows = users[start:start + chunk]
        vec = parts.user_factors[rows] if parts.user_factors is not None else None
        scores = score_rows(parts, history[rows], vec)
        mask = exclude[rows].toarray()
        if allowed is not None:
            mask[:, allowed] = 1
        out[start:start + chunk] = top_k(scores, mask, k)
    return out


def evaluate_parts(parts: ScoringParts, history: sparse.csr_matrix, truth: sparse.csr_matrix, k: int) -> RankingMetrics:
    """Ranking metrics of ``parts`` recommending from ``history`` against held-out ``truth``."""
    users = np.flatnonzero(np.diff(truth.tocsr().indptr) > 0)
    recs = np.zeros((history.shape[0], k), dtype=np.int64)
    recs[users] = recommend_rows(parts, history, users, k)
    counts = np.asarray(history.sum(axis=0)).ravel()
    return ranking_metrics(recs, truth, k=k, popularity=counts, n_users_train=int((np.diff(history.indptr) > 0).sum()))


@dataclass(frozen=True)
class Trial:
    """One point of a hyper-parameter search and its validation score."""

    params: dict[str, Any]
    ndcg: float
    seconds: float


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of a grid (one empty point for an empty grid)."""
    keys = sorted(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]


def tune(algorithm: str, x_fit: sparse.csr_matrix, x_val: sparse.csr_matrix, ctx: FitContext, *, k: int,
         grid: dict[str, list[Any]] | None = None, base: dict[str, Any] | None = None,
         on_trial: Callable[[Trial], None] | None = None) -> tuple[dict[str, Any], list[Trial]]:
    """Fit every grid point on ``x_fit``, score NDCG@k on ``x_val``; the best params and all trials."""
    points = grid_points(grid if grid is not None else DEFAULT_GRIDS.get(algorithm, {}))
    trials = []
    for point in points:
        params = {**(base or {}), **point}
        start = time.perf_counter()
        parts = fit_parts(algorithm, x_fit, params, ctx)
        ndcg = evaluate_parts(parts, x_fit, x_val, k).ndcg
        trial = Trial(params, ndcg, time.perf_counter() - start)
        trials.append(trial)
        if on_trial:
            on_trial(trial)
    best = max(trials, key=lambda t: t.ndcg)
    return best.params, trials


@dataclass(frozen=True)
class ColdStart:
    """Hit rate@k on items nobody had interacted with in training."""

    items: int
    users: int
    hit_rate: dict[str, float]


def cold_start_hit_rate(models: dict[str, ScoringParts], history: sparse.csr_matrix, truth: sparse.csr_matrix,
                        cold: np.ndarray, k: int, *, seed: int = 0, random_draws: int = 20) -> ColdStart:
    """Rank only the ``cold`` items for every user with a held-out positive among them; a hit is one
    of those positives in the top k. ``random`` is the mean over ``random_draws`` seeded shuffles."""
    truth = truth.tocsr()[:, cold]
    users = np.flatnonzero(np.diff(truth.indptr) > 0)
    truth_users = truth[users]
    out: dict[str, float] = {}
    for name, parts in models.items():
        recs = recommend_rows(parts, history, users, k, candidates=cold)
        pos = np.full(history.shape[1], -1)
        pos[cold] = np.arange(len(cold))
        local = pos[recs]
        out[name] = float(np.mean([np.isin(local[i], truth_users[i].indices).any() for i in range(len(users))]))
    rng = np.random.default_rng(seed)
    hits = []
    for _ in range(random_draws):
        for i in range(len(users)):
            draw = rng.choice(len(cold), size=min(k, len(cold)), replace=False)
            hits.append(np.isin(draw, truth_users[i].indices).any())
    out["random"] = float(np.mean(hits))
    return ColdStart(items=len(cold), users=len(users), hit_rate=out)

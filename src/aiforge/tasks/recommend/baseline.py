"""The recommendation baselines: popularity and item-kNN (implicit's cosine neighbours), per-user NDCG@k.

Each baseline is fitted on the tuning part of the training split and scored on validation (which
picks the best), then refitted on the training split and scored on the same test users as the
shipped model; the paired bootstrap resamples those users.
"""

from __future__ import annotations

import time

import numpy as np
from scipy import sparse

from aiforge.audit.baseline import BaselineReport, BaselineResult, compare_with_baselines, skipped_report
from aiforge.errors import SpecError
from aiforge.tasks.recommend.evaluate import recommend_rows
from aiforge.tasks.recommend.models import FitContext, fit_parts
from aiforge.tasks.recommend.scoring import ScoringParts

__all__ = ["BASELINES", "HINT", "per_user_ndcg", "recommend_baselines"]

BASELINES = ("popularity", "item-knn")
HINT = ("tune the model (model.search: true, a wider model.grid) or compare other algorithms (model.compare); "
        "on sparse data popularity and item neighbours are hard to beat")


def per_user_ndcg(parts: ScoringParts, history: sparse.csr_matrix, truth: sparse.csr_matrix, k: int) -> np.ndarray:
    """NDCG@k of each user with held-out positives in ``truth`` (in user order), seen items masked."""
    truth = truth.tocsr()
    users = np.flatnonzero(np.diff(truth.indptr) > 0)
    recs = recommend_rows(parts, history, users, k)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    out = np.empty(len(users))
    for row, u in enumerate(users):
        rel = truth.indices[truth.indptr[u]:truth.indptr[u + 1]]
        hits = np.isin(recs[row], rel).astype(np.float64)
        out[row] = float((hits * discounts).sum() / discounts[:min(k, len(rel))].sum())
    return out


def _baseline(name: str, *, x_fit: sparse.csr_matrix, x_val: sparse.csr_matrix, x_train: sparse.csr_matrix,
              x_test: sparse.csr_matrix, ctx: FitContext, k: int) -> BaselineResult:
    start = time.perf_counter()
    try:
        val = per_user_ndcg(fit_parts(name, x_fit, {}, ctx), x_fit, x_val, k)
        test = per_user_ndcg(fit_parts(name, x_train, {}, ctx), x_train, x_test, k)
    except SpecError as exc:  # too few items for a neighbour model, say
        return BaselineResult(name, f"ndcg@{k}", None, None, time.perf_counter() - start, skipped=True,
                              reason=str(exc))
    return BaselineResult(name, f"ndcg@{k}", float(val.mean()), float(test.mean()), time.perf_counter() - start,
                          test_scores=test)


def recommend_baselines(*, algorithm: str, model: ScoringParts, model_validation: float | None,
                        x_fit: sparse.csr_matrix, x_val: sparse.csr_matrix, x_train: sparse.csr_matrix,
                        x_test: sparse.csr_matrix, ctx: FitContext, k: int, fit_seconds: float,
                        enabled: bool = True) -> BaselineReport:
    """Popularity and item-kNN against the shipped recommender (per-user NDCG@k on the test users)."""
    metric = f"ndcg@{k}"
    if not enabled:
        return skipped_report(metric)
    start = time.perf_counter()
    candidates = [
        BaselineResult(name, metric, None, None, 0.0, skipped=True, reason=f"the model is {name}")
        if name == algorithm else
        _baseline(name, x_fit=x_fit, x_val=x_val, x_train=x_train, x_test=x_test, ctx=ctx, k=k)
        for name in BASELINES]
    scores = per_user_ndcg(model, x_train, x_test, k)
    return compare_with_baselines(metric=metric, candidates=candidates, model_validation=model_validation,
                                  model_test=float(scores.mean()), model_test_scores=scores,
                                  fit_seconds=fit_seconds, hint=HINT, seed=ctx.seed,
                                  seconds=time.perf_counter() - start)

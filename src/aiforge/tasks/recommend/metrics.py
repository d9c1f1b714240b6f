"""Ranking and popularity-bias metrics of top-k recommendations (numpy only).

Accuracy (mean over users with at least one held-out positive): precision@k, recall@k
(hits / held-out positives), NDCG@k (binary gains, ideal DCG over min(k, positives)),
MAP@k (average precision over min(k, positives)), hit rate@k.
Popularity bias (over every list): catalogue coverage, mean popularity of recommended items
(share of training users who liked them), Gini of item exposure over the whole catalogue,
and the long-tail share: slots given to items outside the short head, the most popular items
that together hold 20 % of the training positives (so the split does not depend on how many
never-liked items a catalogue carries).
Exposure by item group (:func:`exposure_by_group`): for popularity buckets (head / middle / tail
by cumulative share of training positives) or any item-level column (a provider, say), each
group's share of catalogue items, of training positives and of recommendation slots, and the
ratio of slots to positives (1 = exposed as often as it is liked; < 1 under-exposed).
:func:`exposure_intervals` bootstraps the gaps over users (the unit a recommender serves), which
is what the exposure release gates are decided on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import sparse

__all__ = ["EXPOSURE_GAPS", "RankingMetrics", "exposure_by_group", "exposure_intervals", "gini",
           "popularity_buckets", "ranking_metrics"]


@dataclass(frozen=True)
class RankingMetrics:
    """Accuracy and popularity-bias numbers of one model on one split."""

    k: int
    users: int
    precision: float
    recall: float
    ndcg: float
    map: float
    hit_rate: float
    coverage: float
    avg_popularity: float
    gini: float
    long_tail_share: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)

    def headline(self) -> dict[str, float]:
        """The numbers a registry listing shows."""
        return {f"ndcg@{self.k}": self.ndcg, f"recall@{self.k}": self.recall, f"precision@{self.k}": self.precision,
                f"map@{self.k}": self.map, "coverage": self.coverage}


def gini(exposure: np.ndarray) -> float:
    """Gini coefficient of non-negative counts (0: every item shown equally often; 1: one item)."""
    x = np.sort(np.asarray(exposure, dtype=np.float64))
    n = len(x)
    if n == 0 or x.sum() == 0:
        return 0.0
    cum = np.cumsum(x)
    return float((n + 1 - 2 * (cum / cum[-1]).sum()) / n)


def ranking_metrics(recs: np.ndarray, truth: sparse.csr_matrix, *, k: int, popularity: np.ndarray,
                    n_users_train: int) -> RankingMetrics:
    """Metrics of ``recs`` (u, >=k) item indices against held-out positives ``truth`` (u, n).

    ``popularity`` is each item's count of training positives.
    """
    recs = recs[:, :k]
    truth = truth.tocsr()
    n_items = truth.shape[1]
    has = np.diff(truth.indptr) > 0
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    prec, rec, ndcg, ap, hit = [], [], [], [], []
    for u in np.flatnonzero(has):
        rel = set(truth.indices[truth.indptr[u]:truth.indptr[u + 1]].tolist())
        hits = np.array([r in rel for r in recs[u].tolist()], dtype=np.float64)
        n_rel = len(rel)
        prec.append(hits.sum() / k)
        rec.append(hits.sum() / n_rel)
        ndcg.append(float((hits * discounts).sum() / discounts[:min(k, n_rel)].sum()))
        ap.append(float((np.cumsum(hits) / np.arange(1, k + 1) * hits).sum() / min(k, n_rel)))
        hit.append(float(hits.any()))
    recs = recs[has]  # popularity bias is measured on the same users as accuracy
    exposure = np.bincount(recs.ravel(), minlength=n_items)
    order = np.argsort(-popularity, kind="stable")
    held = np.cumsum(popularity[order]) / max(float(popularity.sum()), 1.0)
    head = order[: int(np.searchsorted(held, 0.2)) + 1]
    in_head = np.zeros(n_items, dtype=bool)
    in_head[head] = True
    share = popularity / max(n_users_train, 1)
    return RankingMetrics(
        k=k, users=int(has.sum()), precision=float(np.mean(prec)), recall=float(np.mean(rec)),
        ndcg=float(np.mean(ndcg)), map=float(np.mean(ap)), hit_rate=float(np.mean(hit)),
        coverage=float((exposure > 0).sum() / n_items), avg_popularity=float(share[recs].mean()),
        gini=gini(exposure), long_tail_share=float(1.0 - in_head[recs].mean()),
    )


def popularity_buckets(popularity: np.ndarray) -> np.ndarray:
    """Each item's bucket: "head" (the most popular items holding 20 % of training positives), "tail"
    (the least popular holding the last 20 %, never-liked items included) or "middle"."""
    order = np.argsort(-popularity, kind="stable")
    held = np.cumsum(popularity[order]) / max(float(popularity.sum()), 1.0)
    out = np.full(len(popularity), "middle", dtype=object)
    head_end = int(np.searchsorted(held, 0.2)) + 1
    tail_start = int(np.searchsorted(held, 0.8, side="right"))
    out[order[:head_end]] = "head"
    out[order[max(tail_start, head_end):]] = "tail"
    return out


def exposure_by_group(recs: np.ndarray, groups: np.ndarray, popularity: np.ndarray) -> dict[str, Any]:
    """Exposure of each item group in the top-k lists ``recs`` (users, k) against its share of positives.

    Returns per group its item count, catalogue share, positive share, slot (exposure) share and
    exposure ratio (slot share / positive share); and over the groups the largest minus the
    smallest slot share, the smallest exposure ratio and the smallest slot share.
    """
    slots = np.bincount(recs.ravel(), minlength=len(groups)).astype(np.float64)
    total_slots, total_pos = max(slots.sum(), 1.0), max(float(popularity.sum()), 1.0)
    rows: dict[str, dict[str, float]] = {}
    for g in sorted(set(groups.tolist())):
        mask = groups == g
        pos_share = float(popularity[mask].sum()) / total_pos
        slot_share = float(slots[mask].sum()) / total_slots
        rows[str(g)] = {"items": int(mask.sum()), "catalogue_share": float(mask.mean()),
                        "positive_share": pos_share, "exposure_share": slot_share,
                        "exposure_ratio": slot_share / pos_share if pos_share > 0 else float("nan")}
    ratios = [r["exposure_ratio"] for r in rows.values() if np.isfinite(r["exposure_ratio"])]
    shares = [r["exposure_share"] for r in rows.values()]
    return {"groups": rows, "exposure_share_difference": max(shares) - min(shares) if shares else 0.0,
            "min_exposure_ratio": min(ratios) if ratios else float("nan"),
            "min_exposure_share": min(shares) if shares else 0.0}


# the over-groups numbers of :func:`exposure_by_group` that gates judge (each gets a bootstrap interval)
EXPOSURE_GAPS = ("exposure_share_difference", "min_exposure_ratio", "min_exposure_share")


def exposure_intervals(recs: np.ndarray, groups: np.ndarray, popularity: np.ndarray, *, resamples: int = 200,
                       confidence: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Percentile bootstrap intervals of :data:`EXPOSURE_GAPS`, resampling users (rows of ``recs``).

    Training popularity (the positive shares) is fixed; only which users' lists fill the slots
    varies, so the interval says how much the exposure gaps depend on the users sampled.
    """
    codes_of = {g: c for c, g in enumerate(sorted(set(groups.tolist())))}
    codes = np.array([codes_of[g] for g in groups.tolist()], dtype=np.int64)
    k = len(codes_of)
    pos = np.bincount(codes, weights=popularity.astype(np.float64), minlength=k) / max(float(popularity.sum()), 1.0)
    item_code = codes[recs]  # (users, k): each slot's group
    per_user = np.stack([np.bincount(row, minlength=k) for row in item_code]) if len(recs) else np.zeros((0, k))
    rng = np.random.default_rng(seed)
    stats = np.full((resamples, len(EXPOSURE_GAPS)), np.nan)
    for b in range(resamples):
        slots = per_user[rng.integers(0, len(per_user), len(per_user))].sum(axis=0) if len(per_user) else np.zeros(k)
        share = slots / max(float(slots.sum()), 1.0)
        ratio = share[pos > 0] / pos[pos > 0]
        stats[b] = [share.max() - share.min(), ratio.min() if len(ratio) else np.nan, share.min()]
    lo, hi = (1 - confidence) / 2 * 100, (1 + confidence) / 2 * 100
    out: dict[str, Any] = {}
    for j, name in enumerate(EXPOSURE_GAPS):
        finite = stats[np.isfinite(stats[:, j]), j]
        out[name] = [float(np.percentile(finite, lo)), float(np.percentile(finite, hi))] if len(finite) else None
    return out | {"resamples": resamples, "confidence": confidence, "users": len(recs)}

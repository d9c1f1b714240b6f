"""What ``aiforge eval``, ``audit`` and ``ship`` measure on a recommendation bundle (torch-free).

Held-out positives (a file of interactions, or the spec's test split) are compared with the
bundle's top-k for each known user, recommended through the Runtime exactly as served (the
user's training history excluded). Ranking and popularity-bias numbers are
:func:`aiforge.tasks.recommend.metrics.ranking_metrics`, the ones training reports.

Exposure by item group (popularity bucket, or an item-level column such as a provider) comes with
bootstrap intervals over users; the exposure gates (``max_exposure_share_difference``,
``min_exposure_ratio``, ``min_exposure_share``) run once per entry of ``gates.item_groups`` and are
decided on those intervals like every other gate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import sparse

from aiforge.audit.checks import Measured, stored_spec
from aiforge.audit.fairness import AUDIT_SCHEMA
from aiforge.audit.gates import Gate, Measurements, ReleaseGates
from aiforge.audit.report import CheckReport, ReportTable
from aiforge.bundle.runtime import Runtime
from aiforge.data.readers import read_table
from aiforge.errors import BundleError, DataError
from aiforge.spec import BaseSpec
from aiforge.tasks.recommend.data import load_interactions, split_interactions
from aiforge.tasks.recommend.metrics import (
    RankingMetrics,
    exposure_by_group,
    exposure_intervals,
    popularity_buckets,
    ranking_metrics,
)
from aiforge.tasks.recommend.runtime import RecommendRuntime
from aiforge.tasks.recommend.spec import RecommendGates, RecommendSpec

__all__ = ["CHECKS", "HeldOut", "RecommendChecks"]


@dataclass(frozen=True)
class HeldOut:
    """Held-out positives in bundle indices: one row per evaluated user, with what was skipped."""

    users: np.ndarray  # bundle user indices
    truth: sparse.csr_matrix  # (len(users), n_items)
    source: str
    skipped_users: int = 0
    skipped_items: int = 0


def _rec_runtime(rt: Runtime) -> RecommendRuntime:
    if not isinstance(rt, RecommendRuntime):
        raise BundleError(f"{rt.path}: expected a recommendation bundle, got {rt.manifest.task!r}.")
    return rt


def _spec(rt: Runtime, spec: BaseSpec | None = None) -> RecommendSpec:
    if spec is None:

        spec = stored_spec(rt)
    if not isinstance(spec, RecommendSpec):
        raise BundleError(f"{rt.path}: the stored spec is not a recommendation spec.")
    return spec


def _held_out(rt: RecommendRuntime, pairs: pd.DataFrame, source: str) -> HeldOut:
    """Known (user, item) pairs as a truth matrix; unknown users and items are counted, not used."""
    u = pairs["user"].map(rt.user_index)
    i = pairs["item"].map(rt.item_index)
    known = u.notna() & i.notna()
    if not known.any():
        raise DataError(f"{source}: no interaction names a user and an item this bundle knows "
                        f"({rt.n_items} items, {len(rt.user_ids)} users).")
    uu, ii = u[known].to_numpy(dtype=np.int64), i[known].to_numpy(dtype=np.int64)
    users, rows = np.unique(uu, return_inverse=True)
    truth = sparse.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, ii)), shape=(len(users), rt.n_items))
    truth.sum_duplicates()
    truth.data[:] = 1.0
    return HeldOut(users, truth, source, skipped_users=int(pairs.loc[u.isna(), "user"].nunique()),
                   skipped_items=int((u.notna() & i.isna()).sum()))


def held_out_file(rt: RecommendRuntime, spec: RecommendSpec, data: Path, columns: Mapping[str, str]) -> HeldOut:
    """Held-out positives from an interaction file (columns and rating threshold as trained).

    Raises:
        DataError: the file lacks the user or item column.
    """
    cols = spec.data.columns
    user, item = columns.get("user", cols.user), columns.get("item", cols.item)
    rating = columns.get("rating", cols.rating or "")
    df = read_table(data)
    missing = [c for c in (user, item) if c not in df.columns]
    if missing:
        raise DataError(f"{data}: column(s) {missing} not found. Columns are {list(df.columns)}. Give the user and "
                        "item columns the bundle was trained with, or --column user=NAME --column item=NAME.")
    threshold = spec.data.positive_threshold
    if threshold is not None and rating in df.columns:
        values = pd.to_numeric(df[rating], errors="coerce")
        df = df[values >= threshold]
    pairs = pd.DataFrame({"user": df[user].astype(str).str.strip(), "item": df[item].astype(str).str.strip()})
    return _held_out(rt, pairs, str(data))


def held_out_split(rt: RecommendRuntime, spec: RecommendSpec) -> HeldOut:
    """The spec's test split (the same seeded per-user split training scored)."""
    data = load_interactions(spec.data)
    s = spec.split
    split = split_interactions(data, kind=s.kind, test_fraction=s.test_fraction,
                               validation_fraction=s.validation_fraction, seed=s.seed,
                               min_user_positives=s.min_user_positives)
    users = np.array(data.users, dtype=object)[data.user_idx[split.test]]
    items = np.array(data.items, dtype=object)[data.item_idx[split.test]]
    return _held_out(rt, pd.DataFrame({"user": users, "item": items}), f"{spec.data.interactions or 'movielens'} "
                     "(test split)")


def recommend_all(rt: RecommendRuntime, users: np.ndarray, k: int, *, chunk: int = 256) -> np.ndarray:
    """Top-k bundle item indices (len(users), k) through the Runtime, each user's history excluded."""
    out = np.zeros((len(users), k), dtype=np.int64)
    for start in range(0, len(users), chunk):
        block = users[start:start + chunk]
        queries = [rt.query(user=rt.user_ids[int(u)], k=k) for u in block]
        for r, (q, ranked) in enumerate(zip(queries, rt.run_batch(queries), strict=True)):
            ids = [j for j, _ in ranked]
            # a list falls short only when the user has seen almost the whole catalogue; pad with a seen item
            filler = int(q.history[0]) if len(q.history) else (ids[-1] if ids else 0)
            out[start + r] = (ids + [filler] * k)[:k]
    return out


def _metrics(rt: RecommendRuntime, recs: np.ndarray, truth: sparse.csr_matrix, k: int) -> RankingMetrics:
    popularity = np.bincount(rt.indices, minlength=rt.n_items)
    return ranking_metrics(recs, truth, k=k, popularity=popularity,
                           n_users_train=int((np.diff(rt.indptr) > 0).sum()))


_COLS = ["users", "ndcg", "recall", "precision", "map", "hit_rate", "coverage", "gini", "long_tail_share"]


def _row(name: str, m: RankingMetrics) -> list[str]:
    d = m.to_dict()
    return [name, *(str(d[c]) if c == "users" else f"{d[c]:.4f}" for c in _COLS)]


def _segments(rt: RecommendRuntime, held: HeldOut, data: Path, sensitive: Sequence[str],
              spec: RecommendSpec) -> dict[str, np.ndarray]:
    """Users grouped by training-history length (terciles), or by a ``sensitive`` column's value per user."""
    if not sensitive:
        length = np.diff(rt.indptr)[held.users]
        cuts = np.quantile(length, [1 / 3, 2 / 3])
        return {f"light (<= {cuts[0]:.0f} items)": length <= cuts[0],
                f"medium ({cuts[0]:.0f}-{cuts[1]:.0f})": (length > cuts[0]) & (length <= cuts[1]),
                f"heavy (> {cuts[1]:.0f} items)": length > cuts[1]}
    df = read_table(data)
    col, user = sensitive[0], spec.data.columns.user
    if col not in df.columns or user not in df.columns:
        raise DataError(f"{data}: columns {[user, col]} are needed to group users by {col!r}. Columns are "
                        f"{list(df.columns)}.")
    firsts = df.drop_duplicates(user)
    by_user = dict(zip(firsts[user].astype(str).str.strip(), firsts[col].astype(str), strict=True))
    values = np.array([by_user.get(rt.user_ids[int(u)], "(not in the file)") for u in held.users], dtype=object)
    return {f"{col} = {v}": values == v for v in sorted(set(values.tolist()))}


def _item_columns(rt: RecommendRuntime, data: Path, sensitive: Sequence[str],
                  spec: RecommendSpec) -> tuple[dict[str, np.ndarray], list[str]]:
    """Split ``sensitive`` into item-level columns (one value per item: a provider) and user-level ones.

    A column is item-level when it holds one value per item and more than one overall, unless it
    also holds one value per user among users with several rows (then it groups users).

    Item-level columns come back as each catalogue item's group ("(not in the file)" for items
    the file does not list); the rest group users, as before.
    """
    if not sensitive:
        return {}, []
    df = read_table(data)
    item = spec.data.columns.item
    items: dict[str, np.ndarray] = {}
    users: list[str] = []
    for col in sensitive:
        if col in df.columns and item in df.columns and (df.groupby(item)[col].nunique() <= 1).all() \
                and df[col].nunique() > 1 and not _user_level(df, spec.data.columns.user, col):
            firsts = df.drop_duplicates(item)
            by_item = dict(zip(firsts[item].astype(str).str.strip(), firsts[col].astype(str), strict=True))
            items[col] = np.array([by_item.get(str(i), "(not in the file)") for i in rt.item_ids], dtype=object)
        else:
            users.append(col)
    return items, users


def _user_level(df: pd.DataFrame, user: str, col: str) -> bool:
    """Whether ``col`` is one value per user, judged on users with several rows (none: not user-level)."""
    if user not in df.columns:
        return False
    several = df.groupby(user).filter(lambda g: len(g) > 1)
    return bool(len(several)) and bool((several.groupby(user)[col].nunique() <= 1).all())


def _gate(key: str, metric: str, what: str) -> Gate:
    def read(m: Measurements, feature: str | None) -> float | None:
        value = m.audit.get(metric)
        return float(value) if isinstance(value, int | float) else None

    return Gate(key, f"{what} at k of the exported recommender", "min", read)


POPULARITY = "popularity_bucket"


def _exposure_value(key: str) -> Any:
    def read(m: Measurements, feature: str | None) -> float | None:
        value = m.audit.get("exposure", {}).get(feature or "", {}).get(key)
        return float(value) if isinstance(value, int | float) and np.isfinite(value) else None

    return read


def _exposure_interval(key: str) -> Any:
    def read(m: Measurements, feature: str | None) -> tuple[float, float] | None:
        iv = m.audit.get("exposure", {}).get(feature or "", {}).get("intervals", {}).get(key)
        return (float(iv[0]), float(iv[1])) if isinstance(iv, list) and len(iv) == 2 else None

    return read


def _exposure_gate(key: str, value: str, description: str, direction: Literal["min", "max"]) -> Gate:
    return Gate(key, description, direction, _exposure_value(value), per_feature=True,
                interval=_exposure_interval(value))


EXPOSURE_GATES = (
    _exposure_gate("max_exposure_share_difference", "exposure_share_difference",
                   "largest minus smallest item group's share of top-k slots", "max"),
    _exposure_gate("min_exposure_ratio", "min_exposure_ratio",
                   "smallest item group's slot share over its share of training positives", "min"),
    _exposure_gate("min_exposure_share", "min_exposure_share", "smallest item group's share of top-k slots", "min"),
)


def item_groups(rt: RecommendRuntime, spec: RecommendSpec, names: Sequence[str],
                data: Path | None) -> dict[str, np.ndarray]:
    """Each catalogue item's group for every name: its popularity bucket, or an item-level column.

    A column is looked up in the spec's item table (``data.items``, by ``item_columns.id``), then in
    ``data`` (one value per item). Items the table does not list get "(not in the file)".

    Raises:
        DataError: a column found in neither file, or not one value per item.
    """
    out: dict[str, np.ndarray] = {}
    tables: list[tuple[Path, str]] = []
    if spec.data.items is not None:
        tables.append((Path(spec.data.items), spec.data.item_columns.id))
    if data is not None:
        tables.append((data, spec.data.columns.item))
    for name in names:
        if name == POPULARITY:
            out[name] = popularity_buckets(np.bincount(rt.indices, minlength=rt.n_items))
            continue
        for path, id_col in tables:
            df = read_table(path)
            if name not in df.columns or id_col not in df.columns:
                continue
            ids = df[id_col].astype(str).str.strip()
            if (df.groupby(ids)[name].nunique() > 1).any():
                raise DataError(f"{path}: gates.item_groups {name!r} must hold one value per item ({id_col!r}); "
                                "some items have several.")
            by_item = dict(zip(ids, df[name].astype(str), strict=True))
            out[name] = np.array([by_item.get(str(i), "(not in the file)") for i in rt.item_ids], dtype=object)
            break
        else:
            where = " or ".join(str(p) for p, _ in tables) or "no item table (data.items) and no --data file"
            raise DataError(f"gates.item_groups {name!r}: not a column of {where}. Use {POPULARITY!r} or an "
                            "item-level column (one value per item, e.g. a provider).")
    return out


def exposure_report(recs: np.ndarray, groups: np.ndarray, popularity: np.ndarray) -> dict[str, Any]:
    """Exposure by one item grouping with bootstrap intervals of its gaps (over users)."""
    return {**exposure_by_group(recs, groups, popularity), "intervals": exposure_intervals(recs, groups, popularity)}


class RecommendChecks:
    """Ranking metrics of the exported recommender, per-segment reports and the ranking gates."""

    gates = (_gate("min_ndcg_at_k", "ndcg", "NDCG"), _gate("min_recall_at_k", "recall", "recall"),
             _gate("min_precision_at_k", "precision", "precision"), _gate("min_map_at_k", "map", "MAP"),
             _gate("min_hit_rate_at_k", "hit_rate", "hit rate"),
             _gate("min_coverage", "coverage", "catalogue coverage"), *EXPOSURE_GATES)

    def _score(self, rt: RecommendRuntime, held: HeldOut, k: int) -> tuple[np.ndarray, RankingMetrics]:
        recs = recommend_all(rt, held.users, k)
        return recs, _metrics(rt, recs, held.truth, k)

    def evaluate(self, rt: Runtime, data: Path, *, columns: Mapping[str, str]) -> CheckReport:
        """Ranking and popularity-bias metrics at the spec's k on a file of held-out interactions."""
        rec_rt, spec = _rec_runtime(rt), _spec(rt)
        held = held_out_file(rec_rt, spec, data, columns)
        _, m = self._score(rec_rt, held, spec.model.k)
        body: dict[str, Any] = {**m.to_dict(), "skipped_users": held.skipped_users,
                                "skipped_items": held.skipped_items}
        table = ReportTable(f"{rt.name}:{rt.version} on {data.name}, k={spec.model.k}", ["", *_COLS],
                            [_row("all", m)])
        lines = [f"skipped {held.skipped_users} unknown user(s) and {held.skipped_items} interaction(s) with "
                 "unknown items"] if held.skipped_users or held.skipped_items else []
        return CheckReport(f"{rt.name}:{rt.version} on {data}", body, [table], lines)

    def audit(self, rt: Runtime, data: Path, *, sensitive: Sequence[str], output: Path) -> CheckReport:
        """Ranking metrics per user segment: history-length terciles, or the values of ``--sensitive COL``."""
        rec_rt, spec = _rec_runtime(rt), _spec(rt)
        k = spec.model.k
        held = held_out_file(rec_rt, spec, data, {})
        recs, overall = self._score(rec_rt, held, k)
        item_cols, user_cols = _item_columns(rec_rt, data, sensitive, spec)
        segments = _segments(rec_rt, held, data, user_cols, spec)
        rows = [_row("all", overall)]
        body: dict[str, Any] = {"schema": AUDIT_SCHEMA, "task": "ranking", "overall": overall.to_dict(),
                                "settings": {"k": k, "bootstrap": 200, "confidence": 0.95, "resample": "users"},
                                "segments": {}, "features": {}, "exposure": {}, "data": str(data)}
        for name, mask in segments.items():
            if mask.any():
                m = _metrics(rec_rt, recs[mask], held.truth[mask], k)
                rows.append(_row(name, m))
                body["segments"][name] = m.to_dict()
                body["features"].setdefault(user_cols[0] if user_cols else "history_length", {"groups": {}})[
                    "groups"][name.split(" = ", 1)[-1]] = {"count": int(mask.sum()), **m.to_dict()}
        tables = [ReportTable(f"{rt.name}:{rt.version} by user segment, k={k}", ["segment", *_COLS], rows)]
        popularity = np.bincount(rec_rt.indices, minlength=rec_rt.n_items)
        item_groups = {"popularity_bucket": popularity_buckets(popularity), **item_cols}
        for name, groups in item_groups.items():
            exp = exposure_report(recs, groups, popularity)
            body["exposure"][name] = exp
            tables.append(ReportTable(f"exposure by item {name}, k={k}", ["group", "items", "share of positives",
                                                                           "share of slots", "slots / positives"],
                                      [[g, str(r["items"]), f"{r['positive_share']:.4f}", f"{r['exposure_share']:.4f}",
                                        f"{r['exposure_ratio']:.3f}"] for g, r in exp["groups"].items()]))
        return CheckReport(f"{rt.name}:{rt.version}: audit on {data.name}", body, tables)

    def measure(self, rt: Runtime, spec: BaseSpec, gates: ReleaseGates, data: Path | None) -> Measured:
        """Ranking metrics on ``data`` (held-out interactions), else the spec's test split."""
        rec_rt, rspec = _rec_runtime(rt), _spec(rt, spec)
        held = held_out_file(rec_rt, rspec, data, {}) if data is not None else held_out_split(rec_rt, rspec)
        recs, m = self._score(rec_rt, held, rspec.model.k)
        length = np.diff(rec_rt.indptr)[held.users]
        user = rec_rt.user_ids[int(held.users[np.argsort(length, kind="stable")[len(length) // 2]])]
        k = rspec.model.k
        audit: dict[str, Any] = m.to_dict()
        features: list[str] = []
        if any(gates.is_set(g.key) for g in EXPOSURE_GATES):
            features = list(gates.item_groups) if isinstance(gates, RecommendGates) else [POPULARITY]
            popularity = np.bincount(rec_rt.indices, minlength=rec_rt.n_items)
            audit["exposure"] = {name: exposure_report(recs, groups, popularity)
                                 for name, groups in item_groups(rec_rt, rspec, features, data).items()}
        return Measured(audit, lambda: rec_rt.run_batch([rec_rt.query(user=user, k=k)]), features=features,
                        source=f"{held.source} ({len(held.users)} users)")


CHECKS = RecommendChecks()

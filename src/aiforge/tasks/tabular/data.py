"""Tabular data in: read CSV/Parquet (or a bundled sample), check the schema, split, build columns.

Without a test file, a test split is held out of the training file (stratified by label and every
sensitive feature, seeded) before validation is split off: model, mitigation and threshold choice
see train and validation only, and the gates and the card measure on the held-out rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from aiforge.data.readers import read_table
from aiforge.data.splits import stratified_split
from aiforge.errors import DataError
from aiforge.tasks.tabular.samples import load_sample
from aiforge.tasks.tabular.schema import MISSING_CATEGORY, Column, TabularSchema, finish_columns

__all__ = ["TabularData", "TabularFrame", "frame_columns", "load_tabular"]


@dataclass(frozen=True)
class TabularFrame:
    """One split: the raw frame, 0/1 targets (1 = positive label) and the sensitive columns."""

    frame: pd.DataFrame
    y: np.ndarray
    sensitive: pd.DataFrame

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class TabularData:
    """Train/validation/test splits plus what the model and the audit need to know about columns."""

    train: TabularFrame
    validation: TabularFrame
    full_train: TabularFrame  # train + validation (never the held-out test rows)
    test: TabularFrame
    label: str
    labels: list[str]  # [negative, positive]
    sensitive_features: list[str]
    numeric: list[str]
    categorical: list[str]
    provenance: dict[str, Any]
    test_split: str = "test file"  # or "held-out test split"

    def rows_per_group(self, frame: TabularFrame) -> dict[str, dict[str, int]]:
        """Rows of each group of each sensitive feature in ``frame``."""
        return {f: {str(g): int(n) for g, n in frame.sensitive[f].value_counts().sort_index().items()}
                for f in self.sensitive_features}



def _need(df: pd.DataFrame, cols: list[str], where: str, what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DataError(f"{where}: {what} {missing} not found. Columns are {list(df.columns)}.")


def _targets(df: pd.DataFrame, label: str, labels: list[str], where: str) -> np.ndarray:
    values = df[label].astype(str)
    unknown = sorted(set(values) - set(labels))
    if unknown:
        raise DataError(f"{where}: column {label!r} holds {unknown[:5]}, not one of the training labels {labels}.")
    return np.asarray((values == labels[1]).to_numpy(), dtype=np.int64)


def _frame(df: pd.DataFrame, label: str, labels: list[str], sensitive: list[str], where: str) -> TabularFrame:
    y = _targets(df, label, labels, where)
    sens = df[sensitive].astype(str).reset_index(drop=True) if sensitive else pd.DataFrame(index=range(len(df)))
    return TabularFrame(df.reset_index(drop=True), y, sens)


def load_tabular(spec: Any, *, seed: int = 0) -> TabularData:
    """Read the spec's data (a sample or files), check columns, split off validation rows.

    Raises:
        DataError: a file or column is missing, the label is not binary, or a value has the wrong type.
    """
    d = spec.data
    if d.sample is not None:

        s = load_sample(d.sample)
        train_df, test_df = s.train, s.test
        label = d.label or s.label
        positive = d.positive_label or s.positive_label
        sensitive = d.sensitive_features if d.sensitive_features is not None else s.sensitive_features
        provenance: dict[str, Any] = {"source": f"sample:{s.name}", "licence": s.licence, "provenance": s.provenance}
        where_train, where_test = f"sample {s.name} (train)", f"sample {s.name} (test)"
    else:
        train_df = read_table(d.train, d.format, infer_types=True)
        test_df = read_table(d.test, d.format, infer_types=True) if d.test is not None else None
        label, positive, sensitive = d.label, d.positive_label, d.sensitive_features or []
        provenance = {"source": str(d.train), "test": str(d.test) if d.test else None,
                      "licence": "as given by the data owner", "provenance": f"files {d.train}"
                      + (f" and {d.test}" if d.test else "")}
        where_train, where_test = str(d.train), str(d.test)
    if d.max_rows is not None:
        train_df = train_df.sample(n=min(d.max_rows, len(train_df)), random_state=seed).reset_index(drop=True)
        if test_df is not None:
            test_df = test_df.sample(n=min(d.max_rows, len(test_df)), random_state=seed).reset_index(drop=True)
    _need(train_df, [label], where_train, "label column")
    _need(train_df, sensitive, where_train, "sensitive feature column(s)")
    if test_df is not None:
        _need(test_df, [label, *sensitive], where_test, "column(s)")
    labels = sorted(train_df[label].dropna().astype(str).unique().tolist())
    if len(labels) != 2:
        raise DataError(f"{where_train}: column {label!r} must hold exactly two labels for tabular-classification, "
                        f"it holds {len(labels)}: {labels[:10]}.")
    if positive is None:
        positive = next((p for p in ("1", "True", "true", "yes") if p in labels), None)
        if positive is None:
            raise DataError(f"{where_train}: set data.positive_label to one of {labels} (the favourable or "
                            "predicted outcome whose rate the fairness audit compares).")
    if positive not in labels:
        raise DataError(f"{where_train}: data.positive_label {positive!r} is not one of the labels {labels}.")
    labels = [next(y for y in labels if y != positive), positive]
    if train_df[label].isna().any():
        raise DataError(f"{where_train}: column {label!r} has {int(train_df[label].isna().sum())} empty labels.")
    numeric, categorical = _feature_kinds(train_df, spec, label, sensitive, where_train)
    everything = _frame(train_df, label, labels, sensitive, where_train)
    if test_df is not None:
        full, test, test_split = everything, _frame(test_df, label, labels, sensitive, where_test), "test file"
    else:
        rest, held_test = stratified_split(_strata(everything), fraction=d.test_fraction, seed=seed)
        full, test = _sub(everything, rest), _sub(everything, held_test)
        test_split = "held-out test split"
    kept, held = stratified_split(_strata(full), fraction=d.validation_fraction, seed=seed)
    return TabularData(train=_sub(full, kept), validation=_sub(full, held), full_train=full, test=test,
                       label=label, labels=labels, sensitive_features=list(sensitive), numeric=numeric,
                       categorical=categorical, test_split=test_split,
                       provenance={**provenance, "n_train": len(full), "n_test": len(test), "test_split": test_split,
                                   "test_fraction": d.test_fraction if test_df is None else None, "seed": seed})


def _strata(frame: TabularFrame) -> list[str]:
    """One stratum per (label, group of every sensitive feature): what the seeded splits keep balanced."""
    parts = [frame.y.astype(str)] + [frame.sensitive[c].to_numpy(dtype=str) for c in frame.sensitive.columns]
    return ["|".join(row) for row in zip(*parts, strict=True)]


def _sub(frame: TabularFrame, idx: list[int]) -> TabularFrame:
    at = np.asarray(idx, dtype=np.int64)
    return TabularFrame(frame.frame.iloc[at].reset_index(drop=True), frame.y[at],
                        frame.sensitive.iloc[at].reset_index(drop=True))


def _feature_kinds(df: pd.DataFrame, spec: Any, label: str, sensitive: list[str],
                   where: str) -> tuple[list[str], list[str]]:
    f = spec.features
    _need(df, f.drop, where, "features.drop column(s)")
    excluded = {label, *f.drop} | (set() if f.use_sensitive else set(sensitive))
    if f.numeric is not None or f.categorical is not None:
        numeric, categorical = list(f.numeric or []), list(f.categorical or [])
        _need(df, numeric + categorical, where, "feature column(s)")
        clash = sorted(set(numeric + categorical) & {label})
        if clash:
            raise DataError(f"{where}: the label {label!r} cannot also be a feature.")
    else:
        cols = [c for c in df.columns if c not in excluded]
        numeric = [c for c in cols if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])]
        categorical = [c for c in cols if c not in numeric]
    for c in numeric:
        if not pd.api.types.is_numeric_dtype(df[c]):
            bad = df[c][pd.to_numeric(df[c], errors="coerce").isna() & df[c].notna()]
            raise DataError(f"{where}: column {c!r} is declared numeric but row {int(bad.index[0]) + 2} holds "
                            f"{bad.iloc[0]!r}. Fix the value or list the column under features.categorical.")
    for d in f.derived:
        _need(df, [c for c in d.columns], where, f"features.derived {d.name!r} input column(s)")
        non_numeric = [c for c in d.columns if c not in numeric]
        if non_numeric:
            raise DataError(f"features.derived {d.name!r}: inputs {non_numeric} must be numeric feature columns.")
    if not numeric and not categorical:
        raise DataError(f"{where}: no feature columns are left after removing the label, sensitive and dropped ones.")
    return numeric, categorical



def frame_columns(df: pd.DataFrame, schema: TabularSchema, where: str = "data") -> dict[str, np.ndarray]:
    """Raw columns of a frame as the graph takes them (float32 numbers, str categories), plus derived ones.

    Raises:
        DataError: a needed column is missing or a numeric column holds text.
    """
    _need(df, [c.name for c in schema.columns if c.required], where, "column(s) the model needs")
    raw: dict[str, np.ndarray] = {}
    for c in schema.columns:
        if c.name not in df.columns:
            raw[c.name] = np.full(len(df), np.nan, dtype=np.float32) if c.kind == "numeric" \
                else np.full(len(df), MISSING_CATEGORY, dtype=object)
        elif c.kind == "numeric":
            values = pd.to_numeric(df[c.name], errors="coerce")
            bad = values.isna() & df[c.name].notna()
            if bad.any():
                row = int(np.flatnonzero(bad.to_numpy())[0])
                raise DataError(f"{where}: column {c.name!r} must be numeric; row {row + 2} holds "
                                f"{df[c.name].iloc[row]!r}.")
            raw[c.name] = values.to_numpy(dtype=np.float32, na_value=np.nan)
        else:
            s = df[c.name]
            raw[c.name] = np.where(s.isna(), MISSING_CATEGORY, s.astype(str)).astype(object)
            if c.groups:  # a post-processing threshold exists only for the groups seen in training
                unknown = ~np.isin(raw[c.name], list(c.groups))
                if unknown.any():
                    row = int(np.flatnonzero(unknown)[0])
                    raise DataError(f"{where}: column {c.name!r} row {row + 2} holds {raw[c.name][row]!r}; the "
                                    f"post-processing mitigation knows only the groups {list(c.groups)}.")
    return finish_columns(raw, schema)


def columns_frame(cols: dict[str, np.ndarray], schema: TabularSchema) -> pd.DataFrame:
    """The graph feed as the DataFrame scikit-learn is trained on (same values, float64 for numbers)."""
    return pd.DataFrame({name: (cols[name].ravel().astype(np.float64) if schema.kind_of(name) == "numeric"
                                else cols[name].ravel()) for name in schema.graph_inputs})


def build_schema(data: TabularData, spec: Any, *, sensitive_at_prediction: str | None) -> TabularSchema:
    """The bundle's input schema: raw columns clients send, derived features, graph inputs in order."""
    cols = [Column(c, "numeric") for c in data.numeric] + [Column(c, "categorical") for c in data.categorical]
    feature_names = {c.name for c in cols}
    if sensitive_at_prediction is not None:
        groups = tuple(sorted(data.full_train.sensitive[sensitive_at_prediction].unique().tolist()))
        if sensitive_at_prediction in feature_names:
            cols = [Column(c.name, c.kind, "sensitive", True, groups) if c.name == sensitive_at_prediction else c
                    for c in cols]
        else:
            cols.append(Column(sensitive_at_prediction, "categorical", "sensitive", True, groups))
    derived = tuple(d.model_dump() for d in spec.features.derived)
    graph_inputs = [*data.numeric, *(d["name"] for d in derived), *data.categorical]
    if sensitive_at_prediction is not None and sensitive_at_prediction not in graph_inputs:
        graph_inputs.append(sensitive_at_prediction)
    return TabularSchema(tuple(cols), derived, tuple(graph_inputs))


__all__ += ["build_schema", "columns_frame"]

"""Text-classification data sets: load, check, split."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aiforge.data.readers import read_table
from aiforge.data.splits import stratified_split
from aiforge.errors import DataError
from aiforge.tasks.text.spec import DataSpec

__all__ = ["TextDataset", "TextSplits", "check_test_labels", "load_text_dataset", "load_text_splits"]


@dataclass(frozen=True)
class TextDataset:
    """Texts and their labels, with where they came from."""

    texts: list[str]
    labels: list[str]
    source: str
    groups: dict[str, list[str]] = field(default_factory=dict)  # sensitive column -> each row's group

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: list[int], *, source: str | None = None) -> TextDataset:
        """The rows at ``indices`` as a new data set."""
        return TextDataset(
            [self.texts[i] for i in indices], [self.labels[i] for i in indices], source or self.source,
            {c: [g[i] for i in indices] for c, g in self.groups.items()},
        )

    def strata(self) -> list[str]:
        """One stratum per (label, group of every sensitive column): what the seeded splits keep balanced."""
        return ["|".join([y, *(g[i] for g in self.groups.values())]) for i, y in enumerate(self.labels)]


@dataclass(frozen=True)
class TextSplits:
    """Train, validation and (optional) test sets, and the label order."""

    train: TextDataset
    validation: TextDataset
    test: TextDataset | None
    labels: list[str]


def load_text_dataset(path: str | Path, *, text_column: str, label_column: str,
                      fmt: str = "auto", need_labels: bool = True,
                      group_columns: list[str] | None = None) -> TextDataset:
    """Read texts (and labels, and the ``group_columns``) from a CSV, JSONL or Parquet file and check them.

    Raises:
        DataError: missing file or column, empty text, or an empty label.
    """
    p = Path(path)
    df = read_table(p, fmt)
    cols = [str(c) for c in df.columns]
    missing_groups = [c for c in group_columns or [] if c not in cols]
    if missing_groups:
        raise DataError(f"{p}: sensitive column(s) {missing_groups} not found. Columns are {cols}. Set "
                        "data.sensitive_features (or --sensitive) to columns of the file.")
    wanted = [text_column] + ([label_column] if need_labels else [])
    for col in wanted:
        if col not in cols:
            which = "text_column" if col == text_column else "label_column"
            raise DataError(f"{p}: column {col!r} not found. Columns are {cols}. Set data.{which} in the spec.")
    texts = [_as_text(v) for v in df[text_column].tolist()]
    empty = [i + 1 for i, t in enumerate(texts) if not t.strip()]
    if empty:
        raise DataError(
            f"{p}: column {text_column!r} has {len(empty)} empty text(s), first at data row(s) {empty[:5]} "
            "(1-based, header excluded). "
            "Every example needs non-empty text."
        )
    labels: list[str] = []
    if need_labels:
        labels = [_as_text(v) for v in df[label_column].tolist()]
        missing = [i + 1 for i, y in enumerate(labels) if not y.strip()]
        if missing:
            raise DataError(
                f"{p}: column {label_column!r} is empty at {len(missing)} row(s), first at data row(s) "
                f"{missing[:5]} (1-based, header excluded)."
            )
    groups = {c: [_as_text(v) or "(missing)" for v in df[c].tolist()] for c in group_columns or []}
    return TextDataset(texts, labels, str(p), groups)


def _as_text(value: object) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value)


def check_train_labels(ds: TextDataset) -> list[str]:
    """Sorted label list; every label needs at least two examples.

    Raises:
        DataError: fewer than two labels, or a label with a single example.
    """
    counts = Counter(ds.labels)
    rare = sorted(y for y, n in counts.items() if n < 2)
    if rare:
        raise DataError(
            f"{ds.source}: label(s) {rare[:10]} have fewer than 2 examples"
            f"{' (and more)' if len(rare) > 10 else ''}. Add examples or remove those rows."
        )
    if len(counts) < 2:
        raise DataError(f"{ds.source}: found {len(counts)} label(s); a classifier needs at least 2.")
    return sorted(counts)


def check_test_labels(ds: TextDataset, known: list[str], *, out_of_scope: str | None = None) -> None:
    """Every label in ``ds`` must have been seen in training (or be the out-of-scope label).

    Raises:
        DataError: naming the unseen labels.
    """
    unseen = sorted(set(ds.labels) - set(known) - {out_of_scope})
    if unseen:
        raise DataError(
            f"{ds.source}: label(s) {unseen[:10]} never appear in the training data. "
            "Add training examples for them or drop those rows."
        )


def _cap_per_label(ds: TextDataset, cap: int, seed: int) -> TextDataset:
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ds)).tolist()
    seen: Counter[str] = Counter()
    keep = []
    for i in order:
        if seen[ds.labels[i]] < cap:
            seen[ds.labels[i]] += 1
            keep.append(i)
    return ds.subset(sorted(keep))


def load_text_splits(spec: DataSpec, *, seed: int, out_of_scope: str | None = None) -> TextSplits:
    """Load train/validation/test as the spec says; split validation off train if absent.

    With ``sensitive_features`` and no test file, a test split (stratified by label and group,
    seeded) is held out of train first, so the per-group gates measure rows that chose nothing.
    Rows labelled ``out_of_scope`` may appear in any file (and need not appear in train).

    Raises:
        DataError: any check on any file fails.
    """
    kw = {"text_column": spec.text_column, "label_column": spec.label_column, "fmt": spec.format,
          "group_columns": list(spec.sensitive_features or [])}
    train = load_text_dataset(spec.train, **kw)  # type: ignore[arg-type]
    if spec.max_per_label:
        train = _cap_per_label(train, spec.max_per_label, seed)
    labels = check_train_labels(train)
    test = None
    if spec.test is not None:
        test = load_text_dataset(spec.test, **kw)  # type: ignore[arg-type]
        check_test_labels(test, labels, out_of_scope=out_of_scope)
        if spec.max_test_per_label:
            test = _cap_per_label(test, spec.max_test_per_label, seed)
    elif spec.sensitive_features:  # per-group gates are decided on rows that chose nothing
        kept, held = stratified_split(train.strata(), fraction=spec.test_fraction, seed=seed)
        test = train.subset(held, source=f"{train.source} (held-out test split)")
        train = train.subset(kept)
    if spec.validation is not None:
        validation = load_text_dataset(spec.validation, **kw)  # type: ignore[arg-type]
        check_test_labels(validation, labels, out_of_scope=out_of_scope)
    else:
        strata = train.strata() if spec.sensitive_features else train.labels
        kept, held = stratified_split(strata, fraction=spec.validation_fraction, seed=seed)
        validation = train.subset(held, source=f"{train.source} (validation split)")
        train = train.subset(kept)
    return TextSplits(train, validation, test, labels)

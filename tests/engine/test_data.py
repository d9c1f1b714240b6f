"""Data in: readers, checks and splits, on real bad files."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from aiforge.data import read_table, stratified_split
from aiforge.errors import DataError
from aiforge.tasks.text.data import load_text_dataset, load_text_splits
from aiforge.tasks.text.spec import DataSpec

ROWS = [
    ("I lost my card", "card_lost"),
    ("my card was stolen", "card_lost"),
    ("what is my balance", "balance"),
    ("how much money do I have", "balance"),
    ("send money to my friend", "transfer"),
    ("transfer 50 euros", "transfer"),
]


def _csv(path: Path, rows: list[tuple[str, str]], header: str = "text,label") -> Path:
    body = "".join(f'"{t}",{y}\n' for t, y in rows)
    path.write_text(f"{header}\n{body}", encoding="utf-8")
    return path


def _load(path: Path, **kw: object) -> object:
    return load_text_dataset(path, text_column="text", label_column="label", **kw)


# --- readers ----------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data file not found") as info:
        _load(tmp_path / "nope.csv")
    assert "nope.csv" in str(info.value)


def test_missing_column_names_it_and_lists_columns(tmp_path: Path) -> None:
    path = _csv(tmp_path / "d.csv", ROWS, header="utterance,label")
    with pytest.raises(DataError) as info:
        _load(path)
    msg = str(info.value)
    assert "column 'text' not found" in msg
    assert "['utterance', 'label']" in msg
    assert "data.text_column" in msg


def test_missing_label_column_points_at_label_setting(tmp_path: Path) -> None:
    path = _csv(tmp_path / "d.csv", ROWS, header="text,intent")
    with pytest.raises(DataError, match=r"column 'label' not found.*data\.label_column"):
        _load(path)


def test_label_column_not_needed_for_prediction(tmp_path: Path) -> None:
    path = _csv(tmp_path / "d.csv", ROWS, header="text,intent")
    ds = load_text_dataset(path, text_column="text", label_column="", need_labels=False)
    assert ds.texts == [t for t, _ in ROWS]
    assert ds.labels == []


def test_empty_text_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text('text,label\nhello,a\n"",b\n   ,c\nbye,a\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"2 empty text\(s\), first at data row\(s\) \[2, 3\]"):
        _load(path)


def test_empty_label_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("text,label\nhello,a\nbye,\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"column 'label' is empty at 1 row\(s\), first at data row\(s\) \[2\]"):
        _load(path)


def test_empty_text_row_number_in_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "hello", "label": "a"}\n{"text": "", "label": "b"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"first at data row\(s\) \[2\]"):
        _load(path)


def test_csv_jsonl_and_parquet_read_the_same(tmp_path: Path) -> None:
    rows = [*ROWS, ("a text, with a comma", "balance"), ('she said "hi"', "transfer"), ("123", "balance")]
    frame = pd.DataFrame(rows, columns=["text", "label"])
    frame.to_csv(tmp_path / "d.csv", index=False)
    (tmp_path / "d.jsonl").write_text(
        "".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows), encoding="utf-8"
    )
    frame.to_parquet(tmp_path / "d.parquet", index=False)
    loaded = [_load(tmp_path / f"d.{ext}") for ext in ("csv", "jsonl", "parquet")]
    for ds in loaded:
        assert ds.texts == [t for t, _ in rows]
        assert ds.labels == [y for _, y in rows]
        assert all(isinstance(t, str) for t in ds.texts)
    assert [ds.source for ds in loaded] == [str(tmp_path / f"d.{ext}") for ext in ("csv", "jsonl", "parquet")]


def test_explicit_format_overrides_suffix(tmp_path: Path) -> None:
    path = tmp_path / "d.data"
    path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in ROWS), encoding="utf-8")
    assert _load(path, fmt="jsonl").labels == [y for _, y in ROWS]


def test_unknown_suffix(tmp_path: Path) -> None:
    path = tmp_path / "d.xlsx"
    path.write_text("text,label\na,b\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"cannot tell the format from suffix '\.xlsx'"):
        read_table(path)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", "", "the file is empty"),
        ("header_only.csv", "text,label\n", "the file has no rows"),
        ("broken.jsonl", '{"text": "a", "label": \n', "cannot read it as jsonl"),
        ("broken.parquet", "this is not parquet", "cannot read it as parquet"),
    ],
)
def test_unreadable_files(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_table(path)


# --- label checks -----------------------------------------------------------------------------


def test_label_with_a_single_example(tmp_path: Path) -> None:
    train = _csv(tmp_path / "train.csv", [*ROWS, ("hello there", "greeting")])
    with pytest.raises(DataError, match=r"label\(s\) \['greeting'\] have fewer than 2 examples"):
        load_text_splits(DataSpec(train=train), seed=0)


def test_a_single_label_is_not_a_classifier(tmp_path: Path) -> None:
    train = _csv(tmp_path / "train.csv", [(t, "only") for t, _ in ROWS])
    with pytest.raises(DataError, match="at least 2"):
        load_text_splits(DataSpec(train=train), seed=0)


def test_test_label_never_seen_in_training(tmp_path: Path) -> None:
    train = _csv(tmp_path / "train.csv", ROWS)
    test = _csv(tmp_path / "test.csv", [("hi", "greeting"), ("what is my balance", "balance")])
    with pytest.raises(DataError, match=r"label\(s\) \['greeting'\] never appear in the training data") as info:
        load_text_splits(DataSpec(train=train, test=test), seed=0)
    assert "test.csv" in str(info.value)


def test_splits_hold_out_validation_from_train(tmp_path: Path) -> None:
    rows = [(f"{y} example {i}", y) for y in ("a", "b", "c") for i in range(10)]
    train = _csv(tmp_path / "train.csv", rows)
    test = _csv(tmp_path / "test.csv", rows[:3])
    splits = load_text_splits(DataSpec(train=train, test=test, validation_fraction=0.2), seed=0)
    assert splits.labels == ["a", "b", "c"]
    assert Counter(splits.validation.labels) == {"a": 2, "b": 2, "c": 2}
    assert Counter(splits.train.labels) == {"a": 8, "b": 8, "c": 8}
    assert not set(splits.train.texts) & set(splits.validation.texts)
    assert splits.test is not None
    assert len(splits.test) == 3


def test_max_per_label_caps_training_examples(tmp_path: Path) -> None:
    rows = [(f"{y} example {i}", y) for y in ("a", "b") for i in range(20)]
    train = _csv(tmp_path / "train.csv", rows)
    splits = load_text_splits(DataSpec(train=train, max_per_label=5), seed=0)
    assert Counter(splits.train.labels + splits.validation.labels) == {"a": 5, "b": 5}


# --- stratified_split -------------------------------------------------------------------------

LABELS = [y for y in "abcde" for _ in range(10)] + ["f", "f"]


def test_stratified_split_is_reproducible() -> None:
    assert stratified_split(LABELS, fraction=0.2, seed=3) == stratified_split(LABELS, fraction=0.2, seed=3)


def test_stratified_split_depends_on_the_seed() -> None:
    assert stratified_split(LABELS, fraction=0.2, seed=0) != stratified_split(LABELS, fraction=0.2, seed=1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stratified_split_keeps_every_label_on_both_sides(seed: int) -> None:
    kept, held = stratified_split(LABELS, fraction=0.2, seed=seed)
    assert sorted(kept + held) == list(range(len(LABELS)))
    assert not set(kept) & set(held)
    assert {LABELS[i] for i in kept} == set(LABELS)
    assert {LABELS[i] for i in held} == set(LABELS)
    assert Counter(LABELS[i] for i in held) == {"a": 2, "b": 2, "c": 2, "d": 2, "e": 2, "f": 1}


def test_stratified_split_singleton_label_stays_in_kept() -> None:
    kept, held = stratified_split(["a", "a", "a", "b"], fraction=0.5, seed=0)
    assert 3 in kept
    assert 3 not in held

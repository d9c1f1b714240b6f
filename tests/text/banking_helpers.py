"""BANKING77 slices for the text tests: read and write the CSVs, take N examples per intent, a head-mode spec.

A plain module (not conftest) so test modules can import it by name; ``tests/conftest.py`` uses it too.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from typing import Any

APP_NAME = "bank8"


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["text", "category"])
        writer.writeheader()
        writer.writerows({"text": r["text"], "category": r["category"]} for r in rows)


def take(rows: list[dict[str, str]], labels: list[str], per_label: int) -> list[dict[str, str]]:
    by_label: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        if row["category"] in labels and len(by_label[row["category"]]) < per_label:
            by_label[row["category"]].append(row)
    short = {y: len(by_label[y]) for y in labels if len(by_label[y]) < per_label}
    assert not short, f"BANKING77 has too few examples for {short}"
    return [row for y in labels for row in by_label[y]]


def head_spec_dict(folder: Path, /, *, name: str = APP_NAME, **sections: dict[str, Any]) -> dict[str, Any]:
    """The spec mapping of a head-mode app on ``folder`` (train.csv, test.csv); ``sections`` update it."""
    spec: dict[str, Any] = {
        "name": name,
        "task": "text-classification",
        "data": {"train": str(folder / "train.csv"), "test": str(folder / "test.csv"),
                 "text_column": "text", "label_column": "category"},
        "model": {"backbone": "minilm-l6", "mode": "head"},
        "train": {"seed": 0},
    }
    for key, value in sections.items():
        spec[key] = {**spec.get(key, {}), **value}
    return spec

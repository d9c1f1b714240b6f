"""Helpers for the scale-out tests: input files of many rows with known bad rows, and reading outputs back."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from aiforge.scale.options import ScaleOptions

__all__ = ["BAD_NUMBER", "BAD_ROWS", "BATCH_ROWS", "INGRESS", "SERVE_BATCH", "SERVE_MAX_QUEUED", "read_predictions",
           "read_rejects", "write_csv_rows"]

BATCH_ROWS = 100_000  # rows of the batch job the cluster tests run (cheap tabular records: 2 cores)
BAD_ROWS = {7, 4_321, 50_000, 99_999}  # 1-based rows holding a word in a numeric field
BAD_NUMBER = "forty"  # the numeric field duration holding a word: the runtime refuses that row alone
# The cluster's ingress: the default (haproxy); AIFORGE_TEST_RAY_INGRESS=proxy runs the cluster tests on Ray's proxy.
INGRESS = os.environ.get("AIFORGE_TEST_RAY_INGRESS", ScaleOptions().ray_ingress)
# The served deployment's batch size (max_ongoing_requests twice that per replica) and queue: a small capacity.
SERVE_BATCH, SERVE_MAX_QUEUED = 8, 8



def write_csv_rows(path: Path, records: list[dict[str, Any]], *, rows: int, bad_rows: set[int]) -> Path:
    """A CSV of ``rows`` records (cycling ``records``) with an ``id`` column; rows in ``bad_rows``
    (1-based) get ``duration`` = :data:`BAD_NUMBER`."""
    fields = ["id", *records[0]]
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for n in range(1, rows + 1):
            record = dict(records[(n - 1) % len(records)], id=f"r{n}")
            if n in bad_rows:
                record["duration"] = BAD_NUMBER
            writer.writerow(record)
    return path


def read_predictions(folder: Path) -> pd.DataFrame:
    """``predictions.parquet`` of a batch output folder."""
    return pd.read_parquet(folder / "predictions.parquet")


def read_rejects(folder: Path) -> list[dict[str, Any]]:
    """The records of ``rejects.jsonl`` of a batch output folder."""
    lines = (folder / "rejects.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]

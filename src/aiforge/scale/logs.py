"""Interaction logs for ``aiforge batch``: one row per (user, item) event, grouped into one request per user.

A bundle whose ``pipeline.json`` has ``batch_log: {"group": COLUMN, "item": COLUMN}`` (recommenders) takes a
log in those columns: every user's logged items become one ``{"user", "items"}`` request, written to a
Parquet file that the batch job then runs like any other input. A log row without a user or an item, or
with an item the bundle cannot use (``Runtime.log_item_errors``), is a reject with its file and row number;
the user's other rows still count.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from aiforge.bundle.runtime import Runtime
from aiforge.scale.rows import FILE, LINE, BatchInput, local_batches

__all__ = ["LogColumns", "LogGroups", "group_log", "id_column", "log_columns"]


@dataclass(frozen=True)
class LogColumns:
    """The log's user (group) and item columns."""

    group: str
    item: str


@dataclass(frozen=True)
class LogGroups:
    """What grouping a log gave: the requests file, its counts, and the log rows refused."""

    requests: Path
    rows: int
    users: int
    rejects: list[dict[str, Any]]


def log_columns(bundle: Path, inputs: BatchInput) -> LogColumns | None:
    """The bundle's log columns when ``inputs`` is such a log (both columns there, no ``items`` column)."""
    spec = json.loads((bundle / "pipeline.json").read_text(encoding="utf-8")).get("batch_log")
    if not isinstance(spec, dict) or inputs.format == "images":
        return None
    columns = LogColumns(group=str(spec["group"]), item=str(spec["item"]))
    present = set(inputs.columns) if inputs.format != "jsonl" else _jsonl_keys(inputs.files[0])
    return columns if {columns.group, columns.item} <= present and "items" not in present else None


def id_column(columns: LogColumns) -> str:
    """The predictions' id column: the log's user column (``user_id`` when it is ``user``, the request's field)."""
    return columns.group if columns.group != "user" else "user_id"


def _jsonl_keys(path: Path) -> set[str]:
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                try:
                    first = json.loads(line)
                except json.JSONDecodeError:
                    return set()
                return set(first) if isinstance(first, dict) else set()
    return set()


def _records(table: pa.Table, columns: LogColumns) -> tuple[list[Any], list[Any], list[str | None]]:
    """Each row's user, item and (a row that is not a record) its error."""
    if LINE not in table.column_names:
        return table.column(columns.group).to_pylist(), table.column(columns.item).to_pylist(), [None] * table.num_rows
    users, items, errors = [], [], []
    for line in table.column(LINE).to_pylist():
        try:
            record = json.loads(line)
            error = None if isinstance(record, dict) else f"expected a JSON object, got {type(record).__name__}"
        except json.JSONDecodeError as exc:
            record, error = None, f"not a JSON line ({exc.msg})"
        record = record if error is None else {}
        users.append(record.get(columns.group))
        items.append(record.get(columns.item))
        errors.append(error)
    return users, items, errors


def group_log(inputs: BatchInput, runtime: Runtime, columns: LogColumns, *, out: Path,
              batch_size: int = 65_536) -> LogGroups:
    """Group the log per user (users in order of first appearance) and write the requests to ``out``."""
    groups: dict[str, list[str]] = {}
    rejects: list[dict[str, Any]] = []
    seen: Counter[str] = Counter()
    rows = 0
    for table in local_batches(inputs, batch_size=batch_size):
        files = table.column(FILE).to_pylist()
        users, items, errors = _records(table, columns)
        item_errors = runtime.log_item_errors([i for i, e in zip(items, errors, strict=True)
                                               if e is None and i not in (None, "")])
        checked = iter(item_errors)
        for file, user, item, error in zip(files, users, items, errors, strict=True):
            seen[file] += 1
            rows += 1
            if error is None and item not in (None, ""):
                error = next(checked)
            elif error is None:
                error = f"no {columns.item!r}"
            if error is None and user in (None, ""):
                error = f"no {columns.group!r}"
            if error is not None:
                rejects.append({"file": file, "row": seen[file], columns.group: None if user is None else str(user),
                                "error": error})
                continue
            groups.setdefault(str(user), []).append(str(item))
    users = pa.array(list(groups), pa.string())
    table = pa.table({"user": users, "items": pa.array(list(groups.values()), pa.list_(pa.string())),
                      id_column(columns): users})
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out)
    return LogGroups(requests=out, rows=rows, users=len(groups), rejects=rejects)

"""Rows of input files to a runtime's items, and items to prediction rows: what both batch backends run.

:class:`BatchPredictor` is the function Ray Data maps over batches (in a pool of actors) and what
``--backend local`` calls in-process, so the two backends compute the same thing. A row that is not a
valid item, or that the model fails on, becomes a reject (its error kept) and never fails its batch:
a batch that fails is run again in halves until the failing rows are alone.
"""

from __future__ import annotations

import glob
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from aiforge.bundle.runtime import ItemLimits, Runtime
from aiforge.errors import DataError, InputError

__all__ = ["FILE", "IMAGE_SUFFIXES", "LINE", "OUTPUT_COLUMNS", "BatchInput", "BatchPredictor", "csv_convert_options",
           "find_inputs", "local_batches"]

FILE, LINE, BYTES = "_file", "_line", "_bytes"  # columns the readers add: source file, raw JSONL line, image bytes
OUTPUT_COLUMNS = ("_file", "_id", "_ok", "label", "score", "output", "error")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}


@dataclass(frozen=True)
class BatchInput:
    """The files of one job, all of one format: ``csv``, ``jsonl``, ``parquet`` or ``images``."""

    files: list[Path]
    format: str
    columns: list[str]  # the columns of the first table file (empty for jsonl and images)


def find_inputs(pattern: str | Path) -> BatchInput:
    """The files ``pattern`` names: a file, a glob, a folder of tables, or a folder of images.

    Raises:
        DataError: nothing matches, the formats are mixed or unknown.
    """
    path = Path(pattern)
    if path.is_dir():
        images = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        tables = sorted(p for p in path.iterdir() if p.suffix.lower() in _FORMATS and p.is_file())
        files = tables or images
        if not files:
            raise DataError(f"{path}: no CSV/JSONL/Parquet file or image ({', '.join(IMAGE_SUFFIXES)}) in this folder.")
        if not tables:
            return BatchInput(files=[p.resolve() for p in images], format="images", columns=[])
    else:
        files = sorted(Path(p) for p in glob.glob(str(pattern), recursive=True) if Path(p).is_file())
        if not files:
            raise DataError(f"--input {pattern}: no file matches. Give a file, a glob such as 'data/*.csv' "
                            "(quoted) or a folder.")
    formats = {_FORMATS.get(p.suffix.lower(), p.suffix or "(none)") for p in files}
    unknown = sorted(f for f in formats if f not in _FORMATS.values())
    if unknown:
        raise DataError(f"--input {pattern}: unsupported file type(s) {unknown}; expected .csv, .jsonl or .parquet.")
    if len(formats) > 1:
        raise DataError(f"--input {pattern}: mixes {sorted(formats)}; run one job per format.")
    fmt = formats.pop()
    files = [p.resolve() for p in files]
    return BatchInput(files=files, format=fmt, columns=_columns(files[0], fmt))


def _columns(path: Path, fmt: str) -> list[str]:
    if fmt == "parquet":
        return list(pq.ParquetFile(path).schema_arrow.names)
    if fmt == "csv":
        with path.open(encoding="utf-8", newline="") as fh:
            header = fh.readline()
        return list(pa_csv.read_csv(pa.py_buffer(header.encode()), read_options=pa_csv.ReadOptions()).column_names) \
            if header.strip() else []
    return []


def csv_convert_options(inputs: BatchInput) -> pa_csv.ConvertOptions:
    """Every CSV column read as text (nulls for empty cells): one bad cell must not retype its column."""
    names = set(inputs.columns)
    for path in inputs.files[1:]:
        names.update(_columns(path, "csv"))
    return pa_csv.ConvertOptions(column_types={name: pa.string() for name in names}, strings_can_be_null=True)


def local_batches(inputs: BatchInput, *, batch_size: int) -> Iterator[pa.Table]:
    """The input files as Arrow batches, in order, with the columns Ray Data's readers give."""
    for path in inputs.files if inputs.format != "images" else []:
        if inputs.format == "parquet":
            for record_batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size):
                yield _with_file(pa.Table.from_batches([record_batch]), path)
        elif inputs.format == "csv":
            table = pa_csv.read_csv(path, convert_options=csv_convert_options(inputs))
            for record_batch in table.to_batches(max_chunksize=batch_size):
                yield _with_file(pa.Table.from_batches([record_batch]), path)
        else:
            lines = path.read_text(encoding="utf-8").splitlines()
            for start in range(0, len(lines), batch_size):
                yield _with_file(pa.table({LINE: lines[start:start + batch_size]}), path)
    if inputs.format == "images":
        for start in range(0, len(inputs.files), batch_size):
            chunk = inputs.files[start:start + batch_size]
            yield pa.table({BYTES: [p.read_bytes() for p in chunk], FILE: [str(p) for p in chunk]})


def _with_file(table: pa.Table, path: Path) -> pa.Table:
    return table.append_column(FILE, pa.array([str(path)] * table.num_rows, pa.string()))


def _number(value: Any) -> Any:
    """A CSV cell of a numeric input as a number when it reads as one (else left as is, for the runtime to refuse)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return value


class BatchPredictor:
    """One bundle loaded once (in a Ray actor, or in-process); called on pandas batches of input rows.

    ``column`` picks the item from each row (a text column); without it a row is a record (tabular).
    The output has one row per input row, in order: :data:`OUTPUT_COLUMNS`, ``_ok`` false for a reject.
    """

    def __init__(self, bundle: str, *, column: str | None = None, id_column: str | None = None,
                 precision: str = "auto", threads: int | None = None, max_text_chars: int = 100_000,
                 runtime: Runtime | None = None) -> None:
        # ``runtime``: one the caller already loaded from ``bundle`` (the local backend's driver), not loaded twice
        self.runtime = runtime or Runtime.load(bundle, precision=precision, threads=threads)
        self.column, self.id_column = column, id_column
        self.limits = ItemLimits(max_inputs=1 << 30, max_text_chars=max_text_chars)
        self.numeric = {t["name"] for t in self.runtime.v2_metadata_inputs() if t.get("datatype") != "BYTES"}

    def __call__(self, batch: pa.Table | pd.DataFrame) -> pd.DataFrame:
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_pandas(batch, preserve_index=False)
        files = [str(f) for f in table.column(FILE).to_pylist()]
        raw, ids, errors = self._items(table)
        good = [i for i, e in enumerate(errors) if e is None]
        parsed = self._parse([raw[i] for i in good])
        outputs: list[Any] = [None] * len(raw)
        for i, (item, error) in zip(good, parsed, strict=True):
            errors[i] = error
            outputs[i] = item
        ready = [i for i in good if errors[i] is None]
        for i, (out, error) in zip(ready, self._run([outputs[i] for i in ready]), strict=True):
            outputs[i], errors[i] = out, error
        return self._frame(files, ids, outputs, errors)

    def _items(self, table: pa.Table) -> tuple[list[Any], list[str | None], list[str | None]]:
        """Each row's item, id and (for a row that is not one) the error."""
        n = table.num_rows
        errors: list[str | None] = [None] * n
        if BYTES in table.column_names:
            return [bytes(b) for b in table.column(BYTES).to_pylist()], [None] * n, errors
        if LINE in table.column_names:
            records: list[Any] = []
            for i, line in enumerate(table.column(LINE).to_pylist()):
                try:
                    record = json.loads(line)
                except (json.JSONDecodeError, TypeError) as exc:
                    record, errors[i] = None, f"not a JSON line ({exc.msg if hasattr(exc, 'msg') else exc})"
                if errors[i] is None and not isinstance(record, dict):
                    record, errors[i] = None, f"expected a JSON object, got {type(record).__name__}"
                records.append(record)
        else:
            records = table.drop_columns([FILE]).to_pylist()
        ids = [None if r is None or self.id_column is None or r.get(self.id_column) is None
               else str(r.get(self.id_column)) for r in records]
        items: list[Any] = []
        for i, record in enumerate(records):
            if record is None:
                items.append(None)
            elif self.column is not None:
                if self.column not in record:
                    errors[i] = f"no field {self.column!r}"
                items.append(record.get(self.column))
            else:
                items.append({k: (_number(v) if k in self.numeric else v) for k, v in record.items()
                              if k != self.id_column})
        return items, ids, errors

    def _parse(self, items: list[Any]) -> list[tuple[Any, str | None]]:
        """``parse_rows`` on all at once; when one is refused, on each alone, so only it is rejected."""
        try:
            return [(p, None) for p in self.runtime.parse_rows(items, "row", self.limits)]
        except InputError:
            pass
        out: list[tuple[Any, str | None]] = []
        for item in items:
            try:
                out.append((self.runtime.parse_rows([item], "row", self.limits)[0], None))
            except InputError as exc:
                out.append((None, str(exc).removeprefix("row[0]").lstrip(": .") or "invalid row"))
        return out

    def _run(self, items: list[Any]) -> list[tuple[Any, str | None]]:
        """``run_batch`` outputs, a failing batch split in halves until each failure is one row."""
        if not items:
            return []
        try:
            outputs = self.runtime.run_batch(items)
            if len(outputs) != len(items):
                raise RuntimeError(f"run_batch gave {len(outputs)} outputs for {len(items)} items")
            return [(o, None) for o in outputs]
        except Exception as exc:  # whatever the model raises on a row is that row's error, not the job's
            if len(items) == 1:
                return [(None, str(exc) if isinstance(exc, InputError) else
                         f"the model failed on this row ({type(exc).__name__})")]
            half = len(items) // 2
            return self._run(items[:half]) + self._run(items[half:])

    def _frame(self, files: Sequence[str], ids: Sequence[str | None], outputs: Sequence[Any],
               errors: Sequence[str | None]) -> pd.DataFrame:
        labels = getattr(self.runtime, "labels", None)
        if not labels:  # not a classifier: the runtime's JSON value per row
            ok = [i for i, e in enumerate(errors) if e is None]
            values = dict(zip(ok, self.runtime.row_outputs([outputs[i] for i in ok]), strict=True))
            outputs = [values.get(i) for i in range(len(outputs))]
        label: list[str | None] = []
        score: list[float | None] = []
        text: list[str | None] = []
        for out, error in zip(outputs, errors, strict=True):
            row = None if error is not None else np.asarray(out) if labels is not None else None
            if row is not None and row.ndim == 1 and labels is not None and len(row) == len(labels):
                k = int(row.argmax())
                label.append(labels[k])
                score.append(float(row[k]))
                text.append(None)
            else:
                label.append(None)
                score.append(None)
                text.append(None if error is not None else json.dumps(_jsonable(out)))
        return pd.DataFrame({"_file": list(files), "_id": list(ids), "_ok": [e is None for e in errors],
                             "label": label, "score": pd.array(score, dtype="Float64"), "output": text,
                             "error": list(errors)})


def _jsonable(value: Any) -> Any:
    """An output (a ranking, a dataclass, an array) as JSON values."""
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value

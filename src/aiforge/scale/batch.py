"""``aiforge batch``: offline inference over files, in-process or on Ray Data, streamed to Parquet.

Both backends run :class:`~aiforge.scale.rows.BatchPredictor` on batches of rows and hand the results
back in input order; this module numbers the rows, writes ``predictions.parquet`` (the input's id
column kept) and ``rejects.jsonl`` (file, row, id, error) one batch at a time, so the driver never
holds all outputs, and writes ``summary.json``.
"""

from __future__ import annotations

import json
import resource
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from aiforge.bundle.format import read_manifest
from aiforge.bundle.registry import Registry
from aiforge.bundle.runtime import Runtime
from aiforge.errors import AiforgeError, DataError
from aiforge.progress import progress_bar
from aiforge.scale.logs import group_log, log_columns
from aiforge.scale.logs import id_column as log_id_column
from aiforge.scale.rows import BatchInput, BatchPredictor, find_inputs, local_batches

__all__ = ["BatchResult", "batch"]

Backend = Literal["local", "ray"]


@dataclass(frozen=True)
class BatchResult:
    """What a batch job wrote and how fast it went."""

    rows: int
    predictions: int
    rejects: int
    seconds: float
    rows_per_s: float
    backend: str
    actors: int
    predictions_file: str
    rejects_file: str
    driver_peak_rss_mb: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _count_rows(inputs: BatchInput) -> int:
    """Rows in the input for the progress bar: Parquet metadata, else line counts (a CSV's less its header;
    a quoted cell spanning lines makes it an upper bound)."""
    if inputs.format == "parquet":
        return int(sum(pq.ParquetFile(p).metadata.num_rows for p in inputs.files))
    if inputs.format == "images":
        return len(inputs.files)
    header = 1 if inputs.format == "csv" else 0
    return sum(max(0, sum(1 for _ in p.open("rb")) - header) for p in inputs.files)


def _default_column(bundle: Path, inputs: BatchInput, column: str | None) -> str | None:
    """The column holding each item: ``column``, else the text column the bundle was trained on, if present."""
    if column is not None:
        if inputs.columns and column not in inputs.columns:
            raise DataError(f"{inputs.files[0]}: column {column!r} not found. Columns are {inputs.columns}. "
                            "Set --column.")
        return column
    trained = read_manifest(bundle, verify=False).extra.get("columns", {}).get("text")
    if trained and (inputs.format == "jsonl" or trained in inputs.columns):
        return str(trained)
    return None


class _Writer:
    """Numbers each row within its file, appends predictions to Parquet and rejects to JSONL."""

    def __init__(self, output: Path, *, id_column: str | None) -> None:
        output.mkdir(parents=True, exist_ok=True)
        self.predictions, self.rejects = output / "predictions.parquet", output / "rejects.jsonl"
        self.id_column = id_column
        self.schema = pa.schema([("file", pa.string()), ("row", pa.int64()),
                                 *([(id_column, pa.string())] if id_column else []),
                                 ("label", pa.string()), ("score", pa.float64()), ("output", pa.string())])
        self.parquet = pq.ParquetWriter(self.predictions, self.schema)
        self.reject_file = self.rejects.open("w", encoding="utf-8")
        self.seen: Counter[str] = Counter()
        self.ok = self.bad = 0

    def write(self, frame: pd.DataFrame) -> int:
        files = frame["_file"].astype(str).tolist()
        rows = []
        for f in files:  # row numbers start at 1: the first data row of each file (after a CSV header)
            self.seen[f] += 1
            rows.append(self.seen[f])
        frame = frame.assign(file=files, row=rows)
        if self.id_column:
            frame = frame.rename(columns={"_id": self.id_column})
        ok = frame["_ok"].astype(bool)
        good, bad = frame[ok], frame[~ok]
        if len(good):
            table = pa.Table.from_pandas(good[[f.name for f in self.schema]], schema=self.schema, preserve_index=False)
            self.parquet.write_table(table)
        for record in bad[["file", "row", *([self.id_column] if self.id_column else []), "error"]].to_dict("records"):
            self.reject_file.write(json.dumps(record) + "\n")
        self.ok += len(good)
        self.bad += len(bad)
        return len(frame)

    def reject_records(self, records: list[dict[str, Any]]) -> None:
        """Rejects found before the model ran (an interaction log's bad rows)."""
        for record in records:
            self.reject_file.write(json.dumps(record) + "\n")
        self.bad += len(records)

    def close(self) -> None:
        self.parquet.close()
        self.reject_file.close()


def batch(bundle: str | Path, *, input: str | Path, output: str | Path, backend: Backend = "local",
          column: str | None = None, id_column: str | None = None, actors: int = 2, batch_size: int = 1024,
          cpus_per_actor: float = 1.0, precision: str = "auto", ray_address: str | None = None,
          home: str | Path | None = None, progress: bool = True) -> BatchResult:
    """Predict every row of ``input`` (a file, glob or folder) with ``bundle``; write the results to ``output``.

    ``id_column`` (default ``id`` when the input has one) is copied to the predictions. ``--backend ray``
    maps batches over ``actors`` Runtime actors with Ray Data (a lost node's work is retried);
    ``local`` runs the same predictor in this process.

    Raises:
        DataError: the input is missing, of an unknown format, or lacks ``column``.
        AiforgeError: Ray is missing or the cluster cannot be reached (``--backend ray``).
    """
    if backend not in ("local", "ray"):
        raise AiforgeError(f"--backend {backend!r}: expected local or ray.")
    if actors < 1 or batch_size < 1:
        raise AiforgeError(f"--actors and --batch-size must be at least 1, got {actors} and {batch_size}.")
    path = Registry(home).resolve(bundle).resolve()
    read_manifest(path)  # verified here once, so a bad bundle fails before any cluster starts
    inputs = find_inputs(input)
    log = log_columns(path, inputs)
    # a Ray actor uses the CPUs Ray reserves for it; the local backend all this process may use (its runtime runs
    # large batches concurrently on them: TextRuntime._offline_plan)
    threads = max(1, int(cpus_per_actor)) if backend == "ray" else None
    # Loaded once in this process where it is needed here: the local backend predicts with it, and an
    # interaction log is checked with it (Ray's actors load their own).
    needed = backend == "local" or log is not None
    runtime = Runtime.load(path, precision=precision, threads=threads) if needed else None
    grouped = None
    if log is not None and runtime is not None:  # an interaction log: one request per user, bad rows rejected
        grouped = group_log(inputs, runtime, log, out=Path(output) / "requests.parquet")
        inputs, id_column, column = find_inputs(grouped.requests), log_id_column(log), None
    id_col = id_column or ("id" if "id" in inputs.columns else None)
    if id_column and inputs.columns and id_column not in inputs.columns:
        raise DataError(f"{inputs.files[0]}: id column {id_column!r} not found. Columns are {inputs.columns}.")
    predictor_args: dict[str, Any] = {"bundle": str(path), "column": _default_column(path, inputs, column),
                                      "id_column": id_col, "precision": precision,
                                      "threads": threads}
    batches: Iterator[pd.DataFrame]
    if backend == "local":
        predictor = BatchPredictor(**predictor_args, runtime=runtime)
        batches = (predictor(b) for b in local_batches(inputs, batch_size=batch_size))
    else:
        # lazy: Ray Data is imported only for --backend ray
        from aiforge.scale.ray_data import ray_batches

        batches = ray_batches(inputs, predictor_args, actors=actors, batch_size=batch_size,
                              cpus_per_actor=cpus_per_actor, ray_address=ray_address)
    writer = _Writer(Path(output), id_column=id_col)
    start = time.perf_counter()  # after the cluster is up: the job's own time
    total = _count_rows(inputs)
    if grouped is not None:
        writer.reject_records(grouped.rejects)
    try:
        with progress_bar(total, f"batch ({backend})", enabled=progress) as advance:
            for frame in batches:
                advance(writer.write(frame))
    finally:
        writer.close()
    seconds = time.perf_counter() - start
    rows = writer.ok + writer.bad if grouped is None else grouped.rows
    result = BatchResult(rows=rows, predictions=writer.ok, rejects=writer.bad, seconds=seconds,
                         rows_per_s=rows / seconds if seconds else 0.0, backend=backend,
                         actors=actors if backend == "ray" else 1, predictions_file=str(writer.predictions),
                         rejects_file=str(writer.rejects),
                         driver_peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    (Path(output) / "summary.json").write_text(json.dumps(result.to_dict(), indent=2), encoding="utf-8")
    return result

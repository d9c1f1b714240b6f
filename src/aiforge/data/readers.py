"""Table readers (CSV, JSONL, Parquet) that turn every failure into a DataError."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from aiforge.errors import DataError

__all__ = ["FORMATS", "detect_format", "read_table"]

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}


def detect_format(path: Path, fmt: str = "auto") -> str:
    """The reader to use for ``path``: ``fmt`` unless it is ``auto``, else by suffix.

    Raises:
        DataError: the suffix is not one aiforge reads.
    """
    if fmt != "auto":
        return fmt
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise DataError(
            f"{path}: cannot tell the format from suffix {path.suffix!r}. "
            f"Use one of {sorted(FORMATS)} or set data.format to csv, jsonl or parquet."
        ) from None


def read_table(path: str | Path, fmt: str = "auto", *, infer_types: bool = False) -> pd.DataFrame:
    """Read a CSV, JSONL or Parquet file into a DataFrame.

    CSV columns stay strings (texts, labels and ids are never turned into numbers) unless
    ``infer_types`` is set, as tabular features need: then numbers stay numbers and blanks after
    a comma are skipped.

    Raises:
        DataError: the file is missing, empty or cannot be parsed.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: data file not found.")
    kind = detect_format(p, fmt)
    try:
        if kind == "csv":
            df = (pd.read_csv(p, skipinitialspace=True) if infer_types
                  else pd.read_csv(p, dtype=str, keep_default_na=False))
        elif kind == "jsonl":
            df = pd.read_json(p, lines=True, dtype=False)
        else:
            df = pd.read_parquet(p)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{p}: the file is empty.") from exc
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{p}: cannot read it as {kind} ({first}).") from exc
    if df.empty:
        raise DataError(f"{p}: the file has no rows.")
    return df

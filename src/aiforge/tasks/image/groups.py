"""Each image's group for the per-group audit: from a groups file or from the columns of the data CSV.

A groups file (``data.groups``: CSV, JSONL or Parquet) has the ``path_column`` and one column per
sensitive feature; a path is resolved against the groups file's folder, and a bare file name
matches the one image of that name. Without a groups file the columns come from the data CSV
itself (``path, label, group...``). Every image must have a group, and every row of a groups file
must name an existing file: either mistake is a :class:`DataError` naming the file.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

from aiforge.data.readers import read_table
from aiforge.errors import DataError
from aiforge.tasks.image.dataset import ImageDataset

__all__ = ["GroupTable", "attach_groups", "read_groups"]


class GroupTable:
    """Groups by resolved image path (and by bare file name when that is unambiguous)."""

    def __init__(self, source: Path, by_path: dict[str, dict[str, str]], by_name: dict[str, dict[str, str]]) -> None:
        self.source = source
        self.by_path = by_path
        self.by_name = by_name

    def lookup(self, image: str) -> dict[str, str] | None:
        """The groups of the image at ``image`` (a path), or ``None`` when the table does not list it."""
        resolved = str(Path(image).resolve())
        return self.by_path.get(resolved) or self.by_name.get(Path(image).name)


def read_groups(path: Path, *, path_column: str, columns: list[str], check_files: bool = True) -> GroupTable:
    """The groups file (or data CSV) at ``path`` as a :class:`GroupTable`.

    Raises:
        DataError: the file or a column is missing, a value is empty, a listed file does not exist
            (``check_files``), or a path is listed twice with different groups.
    """
    if not path.is_file():
        raise DataError(f"{path}: groups file not found (data.groups).")
    df = read_table(path)
    missing = [c for c in [path_column, *columns] if c not in df.columns]
    if missing:
        raise DataError(f"{path}: column(s) {missing} not found. Columns are {list(df.columns)}. The groups file "
                        f"needs data.path_column ({path_column!r}) and every data.sensitive_features column.")
    by_path: dict[str, dict[str, str]] = {}
    names: dict[str, dict[str, str]] = {}
    counts: Counter[str] = Counter()
    for line, row in enumerate(df.to_dict(orient="records"), start=2):
        raw = str(row[path_column] or "").strip()
        values = {c: str(row[c] if row[c] is not None else "").strip() for c in columns}
        empty = [c for c, v in values.items() if not v or v == "nan"]
        if not raw or empty:
            raise DataError(f"{path}: row {line}: empty {(path_column if not raw else empty[0])!r}; every image "
                            "needs a path and a group in every sensitive column.")
        p = Path(raw) if Path(raw).is_absolute() else path.parent / raw
        if check_files and not p.is_file():
            raise DataError(f"{path}: row {line} lists {raw!r}, which is not a file ({p}). Fix the path "
                            f"(relative to {path.parent}) or remove the row.")
        key = str(p.resolve())
        if key in by_path and by_path[key] != values:
            raise DataError(f"{path}: {raw!r} is listed twice with different groups.")
        by_path[key] = values
        counts[p.name] += 1
        names[p.name] = values
    unique = {n: v for n, v in names.items() if counts[n] == 1}
    return GroupTable(path, by_path, unique)


def attach_groups(ds: ImageDataset, table: GroupTable, columns: list[str]) -> ImageDataset:
    """``ds`` with each image's group in every column of ``columns``.

    Raises:
        DataError: the images have no file names (IDX arrays), or an image is not in the table.
    """
    if not ds.names:
        raise DataError(f"{ds.source}: these images have no file names (IDX arrays), so data.sensitive_features "
                        "cannot be looked up; use a folder or a CSV of (path, label) for per-group audits.")
    groups: dict[str, list[str]] = {c: [] for c in columns}
    for name in ds.names:
        found = table.lookup(name)
        if found is None:
            raise DataError(f"{table.source}: no row for image {name!r}; every image needs its group in "
                            f"{columns} (add a row with its path, relative to {table.source.parent}).")
        for c in columns:
            groups[c].append(found[c])
    return replace(ds, groups=groups)

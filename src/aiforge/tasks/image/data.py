"""Labelled image data: a folder per class, a CSV of (path, label), or IDX files; checks; splits; groups.

Images are read with :func:`aiforge.tasks.image.decode.open_image_file`, the same decoder a
server uses for uploads (JPEG/PNG/WebP, EXIF orientation applied), so training sees what
serving will see. Every file is decoded once up front: an unreadable or truncated image is
reported by path before any training starts. Sizes may differ; preprocessing resizes.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aiforge.data.splits import stratified_split
from aiforge.errors import DataError
from aiforge.tasks.image.dataset import ImageDataset, read_idx
from aiforge.tasks.image.decode import open_image_file
from aiforge.tasks.image.groups import GroupTable, attach_groups, read_groups
from aiforge.tasks.image.spec import ImageDataSpec

__all__ = ["IMAGE_SUFFIXES", "ImageSplits", "load_image_dataset", "load_image_splits"]


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


@dataclass(frozen=True)
class ImageSplits:
    """Train, validation and (optional) test sets, and the label order."""

    train: ImageDataset
    validation: ImageDataset
    test: ImageDataset | None
    labels: list[str]


def _detect(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    if path.is_dir():
        return "folder"
    if path.suffix.lower() == ".csv":
        return "csv"
    if "idx" in path.name or "ubyte" in path.name:
        return "idx"
    raise DataError(f"{path}: cannot tell the data format; expected a folder with one sub-folder per class, "
                    "a .csv of (path, label) or IDX files. Set data.format to folder, csv or idx.")


def _read_folder(root: Path) -> tuple[list[Path], list[str]]:
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{root}: no class sub-folders; put each class's images in a sub-folder named after it.")
    paths, labels = [], []
    for folder in classes:
        for p in sorted(folder.rglob("*")):
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(p)
                labels.append(folder.name)
    return paths, labels


def _read_csv(path: Path, path_column: str, label_column: str, need_labels: bool) -> tuple[list[Path], list[str]]:
    if not path.is_file():
        raise DataError(f"{path}: CSV file not found.")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        wanted = [path_column] + ([label_column] if need_labels else [])
        for col in wanted:
            if col not in cols:
                which = "path_column" if col == path_column else "label_column"
                raise DataError(f"{path}: column {col!r} not found. Columns are {cols}. Set data.{which}.")
        rows = list(reader)
    paths, labels = [], []
    for line, row in enumerate(rows, start=2):
        value = (row.get(path_column) or "").strip()
        if not value:
            raise DataError(f"{path}: line {line}: empty {path_column!r}.")
        p = Path(value)
        paths.append(p if p.is_absolute() else path.parent / p)
        label = (row.get(label_column) or "").strip() if need_labels else ""
        if need_labels and not label:
            raise DataError(f"{path}: line {line}: empty {label_column!r}.")
        labels.append(label)
    return paths, labels


def load_image_dataset(path: Path, *, labels_path: Path | None = None, fmt: str = "auto",
                       path_column: str = "path", label_column: str = "label",
                       label_names: list[str] | None = None, need_labels: bool = True) -> ImageDataset:
    """Read and decode a labelled image set (every image is checked here).

    Raises:
        DataError: a missing file or column, an unreadable or truncated image (by path),
            IDX images and labels that disagree, or no images at all.
    """
    kind = _detect(path, fmt)
    if kind == "idx":
        if labels_path is None and need_labels:
            raise DataError(f"{path}: IDX images need their labels file; set data.train_labels / data.test_labels.")
        images = read_idx(path)
        if images.ndim not in (3, 4):
            raise DataError(f"{path}: IDX images must have 3 or 4 dimensions (n, h, w[, c]); got {images.shape}.")
        ys = read_idx(labels_path).ravel() if labels_path is not None else np.zeros(len(images), np.uint8)
        if len(ys) != len(images):
            raise DataError(f"{path}: {len(images)} images but {labels_path} has {len(ys)} labels.")
        if label_names is not None and int(ys.max()) >= len(label_names):
            raise DataError(f"{labels_path}: label {int(ys.max())} but data.label_names has {len(label_names)} names.")
        names = label_names or [str(i) for i in range(int(ys.max()) + 1)]
        return ImageDataset(images, [names[int(y)] for y in ys], str(path))
    paths, labels = _read_folder(path) if kind == "folder" else _read_csv(path, path_column, label_column,
                                                                        need_labels)
    if not paths:
        raise DataError(f"{path}: no images found (looked for {', '.join(IMAGE_SUFFIXES)}).")
    decoded = [open_image_file(p) for p in paths]  # DataError names the bad file
    return ImageDataset(decoded, labels, str(path), [str(p) for p in paths])


def _check_counts(ds: ImageDataset, min_per_class: int, where: str) -> None:
    counts = Counter(ds.labels)
    few = {y: n for y, n in sorted(counts.items()) if n < min_per_class}
    if few:
        raise DataError(f"{ds.source}: class(es) with fewer than {min_per_class} images: {few}. Add images, "
                        f"remove the class, or lower {where}.")
    if len(counts) < 2:
        raise DataError(f"{ds.source}: a classifier needs at least two classes; found {sorted(counts)}.")


def _cap(ds: ImageDataset, per_class: int | None, seed: int) -> ImageDataset:
    if per_class is None:
        return ds
    rng = np.random.default_rng(seed)
    by: dict[str, list[int]] = {}
    for i in rng.permutation(len(ds)).tolist():
        if len(by.setdefault(ds.labels[i], [])) < per_class:
            by[ds.labels[i]].append(i)
    return ds.subset(sorted(i for idx in by.values() for i in idx))


def _own_groups(path: Path, path_column: str, columns: list[str]) -> GroupTable:
    """The group columns of a data CSV itself (no data.groups file)."""
    if not path.is_file() or path.suffix.lower() != ".csv":
        raise DataError(f"{path}: data.sensitive_features {columns} need a groups file (data.groups: path and "
                        "group columns) for a folder or IDX data set, or a data CSV with those columns.")
    return read_groups(path, path_column=path_column, columns=columns)


def load_image_splits(data: object, *, seed: int) -> ImageSplits:
    """Train/validation/test image sets from an :class:`ImageDataSpec`, checked.

    With ``sensitive_features`` every image gets its groups (:mod:`aiforge.tasks.image.groups`) and,
    without a test set, a test split stratified by label and group (seeded) is held out of train first.

    Raises:
        DataError: any data check failed (see :func:`load_image_dataset`), a class has too few
            images, or the test set holds a class the training set lacks.
    """

    if not isinstance(data, ImageDataSpec):
        raise TypeError("load_image_splits takes an ImageDataSpec")
    columns = list(data.sensitive_features or [])
    shared = (read_groups(Path(data.groups), path_column=data.path_column, columns=columns)
              if data.groups is not None and columns else None)

    def read(path: Path, labels_path: Path | None) -> ImageDataset:
        ds = load_image_dataset(path, labels_path=labels_path, fmt=data.format, path_column=data.path_column,
                                label_column=data.label_column, label_names=data.label_names)
        if not columns:
            return ds
        return attach_groups(ds, shared or _own_groups(path, data.path_column, columns), columns)

    train = _cap(read(data.train, data.train_labels), data.max_per_class, seed)
    _check_counts(train, max(data.min_per_class, 2), "data.min_per_class")
    test = None
    if data.test is not None:
        test = _cap(read(data.test, data.test_labels), data.max_test_per_class, seed)
    elif columns:  # per-group gates are decided on images that chose nothing
        kept, held = stratified_split(train.strata(), fraction=data.test_fraction, seed=seed)
        test = train.subset(held, source=f"{train.source} (held-out test split)")
        train = train.subset(kept, source=train.source)
    if data.validation is not None:
        validation = read(data.validation, data.validation_labels)
    else:
        strata = train.strata() if columns else train.labels
        kept, held = stratified_split(strata, fraction=data.validation_fraction, seed=seed)
        train, validation = (train.subset(kept, source=f"{train.source} (train part)"),
                             train.subset(held, source=f"{train.source} (validation part)"))
    seen = set(train.labels)
    labels = [y for y in (data.label_names or sorted(seen)) if y in seen]
    for part in (validation, test):
        if part is not None:
            unknown = sorted(set(part.labels) - set(labels))
            if unknown:
                raise DataError(f"{part.source}: labels never seen in training: {unknown[:10]}.")
    return ImageSplits(train, validation, test, labels)

"""An in-memory labelled image set and the IDX reader (numpy + Pillow only, no pydantic, no torch).

Kept apart from :mod:`aiforge.tasks.image.data` so the training core (:mod:`aiforge.tasks.image.training`)
imports nothing beyond torch, numpy, Pillow and the backbone packages.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from aiforge.errors import DataError

__all__ = ["ImageDataset", "read_idx"]


@dataclass(frozen=True)
class ImageDataset:
    """Decoded images (Pillow) or raw pixel arrays, their labels, and where they came from."""

    images: Sequence[Image.Image] | np.ndarray
    labels: list[str]
    source: str
    names: list[str] | None = None
    groups: dict[str, list[str]] = field(default_factory=dict)  # sensitive feature -> each image's group

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> Image.Image:
        """The ``i``-th image as a Pillow image (arrays become grayscale or RGB images)."""
        item = self.images[i]
        if isinstance(item, Image.Image):
            return item
        return Image.fromarray(np.asarray(item, dtype=np.uint8))

    def name(self, i: int) -> str:
        """A human-readable name of the ``i``-th image (its path, or source#index)."""
        return self.names[i] if self.names else f"{self.source}#{i}"

    def subset(self, indices: Sequence[int], *, source: str | None = None) -> ImageDataset:
        """The items at ``indices`` as a new data set."""
        idx = list(indices)
        images: Sequence[Image.Image] | np.ndarray
        images = self.images[np.asarray(idx, dtype=np.int64)] if isinstance(self.images, np.ndarray) \
            else [self.images[i] for i in idx]
        return ImageDataset(images, [self.labels[i] for i in idx], source or self.source,
                            [self.names[i] for i in idx] if self.names else None,
                            {c: [g[i] for i in idx] for c, g in self.groups.items()})

    def strata(self) -> list[str]:
        """One stratum per (label, group of every sensitive feature): what the seeded splits keep balanced."""
        return ["|".join([y, *(g[i] for g in self.groups.values())]) for i, y in enumerate(self.labels)]


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST format, optionally gzipped) as a numpy array.

    Raises:
        DataError: the file is missing or not an IDX file of unsigned bytes.
    """
    if not path.is_file():
        raise DataError(f"{path}: IDX file not found.")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read IDX file ({exc}).") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number).")
    if raw[2] != 0x08:
        raise DataError(f"{path}: IDX data type 0x{raw[2]:02x} is not supported; expected unsigned bytes (0x08).")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    start = 4 + 4 * ndim
    count = int(np.prod(dims)) if dims else 0
    if len(raw) - start != count:
        raise DataError(f"{path}: IDX header says {dims} ({count} bytes) but the file holds {len(raw) - start}.")
    return np.frombuffer(raw, dtype=np.uint8, offset=start).reshape(dims)

"""The parity and calibration samples of image datasets that export and ``aiforge optimize`` share.
Torch-free, so the optimize hooks import it without the exporter's torch."""

from __future__ import annotations

import numpy as np

from aiforge.data.splits import stratified_split
from aiforge.tasks.image.dataset import ImageDataset

__all__ = ["sample", "sample_indices"]


def sample_indices(ds: ImageDataset, n: int, *, seed: int) -> list[int]:
    """Indices of ``n`` items of ``ds`` (all of them when it has at most ``n``): stratified by label when
    there are more labels than one and fewer than ``n``, else uniformly at random."""
    if len(ds) <= n:
        return list(range(len(ds)))
    if 1 < len(set(ds.labels)) < n:
        _, held = stratified_split(ds.labels, fraction=n / len(ds), seed=seed)
        return held
    return sorted(np.random.default_rng(seed).choice(len(ds), n, replace=False).tolist())


def sample(ds: ImageDataset, n: int, *, seed: int) -> ImageDataset:
    """``ds`` itself when it has at most ``n`` items, else the subset :func:`sample_indices` picks."""
    return ds if len(ds) <= n else ds.subset(sample_indices(ds, n, seed=seed))

"""Seeded, stratified splits."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

__all__ = ["stratified_split"]


def stratified_split(labels: Sequence[str], *, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (kept, held_out) with about ``fraction`` of every label held out.

    Each label with at least two examples keeps at least one on each side; the result
    depends only on ``labels``, ``fraction`` and ``seed``.
    """
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, y in enumerate(labels):
        by_label[y].append(i)
    kept: list[int] = []
    held: list[int] = []
    for y in sorted(by_label):
        idx = np.array(by_label[y])
        rng.shuffle(idx)
        n_held = round(len(idx) * fraction)
        n_held = min(max(n_held, 1 if len(idx) >= 2 else 0), len(idx) - 1)
        held.extend(idx[:n_held].tolist())
        kept.extend(idx[n_held:].tolist())
    return sorted(kept), sorted(held)

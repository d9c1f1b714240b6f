"""Padding token sequences into batches with numpy (shared by training and the Runtime)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from tokenizers import Tokenizer

__all__ = ["encode_batches", "pad_rows"]


def pad_rows(seqs: Sequence[Sequence[int]], idx: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``input_ids`` and ``attention_mask`` (int64) for rows ``idx`` of ``seqs``, right-padded with 0."""
    width = max(len(seqs[i]) for i in idx)
    ids = np.zeros((len(idx), width), dtype=np.int64)
    mask = np.zeros((len(idx), width), dtype=np.int64)
    for row, i in enumerate(idx):
        n = len(seqs[i])
        ids[row, :n] = seqs[i]
        mask[row, :n] = 1
    return ids, mask


def encode_batches(tok: Tokenizer, texts: Sequence[str], batch_size: int, *,
                   sort: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield ``(indices, input_ids, attention_mask)``; texts grouped by token length if ``sort``."""
    seqs = [e.ids for e in tok.encode_batch(list(texts))]
    lengths = np.array([len(s) for s in seqs])
    order = np.argsort(lengths, kind="stable") if sort else np.arange(len(seqs))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        ids, mask = pad_rows(seqs, idx)
        yield idx, ids, mask

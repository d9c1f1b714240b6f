"""Padding token sequences into batches with numpy (shared by training and the Runtime)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from tokenizers import Tokenizer

__all__ = ["encode_batches", "length_groups", "pad_rows"]


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


def length_groups(lengths: np.ndarray, batch_size: int, *, ratio: float = 1.2, slack: int = 2) -> list[np.ndarray]:
    """Indices grouped by token length: sorted, then cut when a group reaches ``batch_size`` or
    a sequence is longer than ``ratio`` x the group's shortest + ``slack`` tokens.

    Padding is wasted compute (attention is quadratic in it): a batch of short queries and one
    long one should not all be padded to the long one.
    """
    order = np.argsort(lengths, kind="stable")
    groups: list[np.ndarray] = []
    start = 0
    for end in range(1, len(order) + 1):
        if end == len(order) or end - start >= batch_size or \
                lengths[order[end]] > lengths[order[start]] * ratio + slack:
            groups.append(order[start:end])
            start = end
    return groups


def encode_batches(tok: Tokenizer, texts: Sequence[str], batch_size: int, *,
                   sort: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield ``(indices, input_ids, attention_mask)``; texts grouped by token length if ``sort``."""
    seqs = [e.ids for e in tok.encode_batch(list(texts))]
    lengths = np.array([len(s) for s in seqs])
    if sort:
        groups = length_groups(lengths, batch_size)
    else:
        groups = [np.arange(i, min(i + batch_size, len(seqs))) for i in range(0, len(seqs), batch_size)]
    for idx in groups:
        ids, mask = pad_rows(seqs, idx)
        yield idx, ids, mask

"""The parity texts: the sample of the test (else validation) set that export and ``aiforge optimize``
compare graphs on. Torch-free, so the optimize hooks import it without the exporter's torch."""

from __future__ import annotations

from aiforge.data.splits import stratified_split
from aiforge.tasks.text.data import TextDataset

__all__ = ["parity_sample"]


def parity_sample(ds: TextDataset, n: int, *, seed: int) -> TextDataset:
    """``ds`` itself when it has at most ``n`` texts, else a stratified sample of ``n`` of them
    (test files are often grouped by label, so the first ``n`` would miss labels)."""
    if n >= len(ds):
        return ds
    _, held = stratified_split(ds.labels, fraction=n / len(ds), seed=seed)
    return ds.subset(held)

"""The parity texts: the sample of the test (else validation) set that export and ``aiforge optimize``
compare graphs on. Torch-free, so the optimize hooks import it without the exporter's torch."""

from __future__ import annotations

from aiforge.data.splits import stratified_split
from aiforge.tasks.text.data import TextDataset

__all__ = ["INT8_GATE_TEXTS", "gate_size", "parity_sample"]


# The int8 gate compares int8 with fp32 ONNX (no PyTorch) on every held-out text up to this many:
# all 3,080 of BANKING77's test set. On its stratified 2,002-text sample one fit's 33.5 MB recipe scored
# 0.9885 while the full test set gave 0.9912; scoring 1,078 more texts per recipe costs seconds.
INT8_GATE_TEXTS = 5000


def gate_size(parity_samples: int) -> int:
    """Texts the int8 gate reads: ``optimize.parity_samples`` or :data:`INT8_GATE_TEXTS`, whichever is more."""
    return max(parity_samples, INT8_GATE_TEXTS)


def parity_sample(ds: TextDataset, n: int, *, seed: int) -> TextDataset:
    """``ds`` itself when it has at most ``n`` texts, else a stratified sample of ``n`` of them
    (test files are often grouped by label, so the first ``n`` would miss labels)."""
    if n >= len(ds):
        return ds
    _, held = stratified_split(ds.labels, fraction=n / len(ds), seed=seed)
    return ds.subset(held)

"""The parity texts: the sample of the test (else validation) set that export and ``aiforge optimize``
compare graphs on. Torch-free, so the optimize hooks import it without the exporter's torch."""

from __future__ import annotations

from aiforge.data.splits import stratified_split
from aiforge.tasks.text.data import TextDataset

__all__ = ["CALIBRATION_TEXTS", "INT8_GATE_TEXTS", "calibration_texts", "gate_size", "parity_sample"]


# The int8 gate compares int8 with fp32 ONNX (no PyTorch) on every held-out text up to this many:
# all 3,080 of BANKING77's test set. On its stratified 2,002-text sample one fit's 33.5 MB recipe scored
# 0.9885 while the full test set gave 0.9912; scoring 1,078 more texts per recipe costs seconds.
INT8_GATE_TEXTS = 5000


# Training texts the smoothed int8 recipe fits its SmoothQuant factors on (per-channel max |activation| of
# each FFN down-projection's input): a random 256, as the static-QDQ calibration in bench/optimize.py.
CALIBRATION_TEXTS = 256


def calibration_texts(texts: list[str], *, seed: int, n: int = CALIBRATION_TEXTS) -> list[str]:
    """``n`` of the training ``texts`` drawn at random with ``seed`` (all of them when there are fewer)."""
    import numpy as np

    if len(texts) <= n:
        return list(texts)
    return [texts[i] for i in sorted(np.random.default_rng(seed).choice(len(texts), n, replace=False))]


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

"""Margin-guarded int8: re-run the items int8 is unsure about through the fp32 graph.

Static int8 flips the top-1 class mostly where fp32 itself is nearly undecided: the items whose
two best classes are within a few points of each other. The guard measures that on the int8
output (``top-1 probability - top-2 probability``) and sends the items under a threshold to
the fp32 graph. The threshold is the smallest one that brings int8's top-1 agreement with fp32
to a target on a *tuning* set (held-out images, not the parity set the gate then checks), so
the guarded int8 graph is judged on images that did not choose its threshold. On a small
tuning set the threshold also guards every disagreement seen there (a confidence bound, see
:func:`min_margin_for`).

numpy only: the torch-free Runtime imports this module.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["FALLBACK_KEY", "guarded", "min_margin_for", "top2_margin", "wilson_upper"]


FALLBACK_KEY = "int8_fallback"  # pipeline.json: {"graph": "fp32", "min_margin": float}


def top2_margin(probs: np.ndarray) -> np.ndarray:
    """Per row: the largest probability minus the second largest (1.0 with a single class)."""
    if probs.shape[1] < 2:
        return np.ones(len(probs), dtype=probs.dtype)
    top = np.partition(probs, -2, axis=1)[:, -2:]
    return np.asarray(top[:, 1] - top[:, 0])


def wilson_upper(errors: int, n: int, z: float = 1.645) -> float:
    """One-sided 95% upper confidence bound (Wilson score) on a rate seen as ``errors`` of ``n``."""
    if n <= 0:
        return 1.0
    p = errors / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return min(1.0, (centre + spread) / (1 + z * z / n))


def min_margin_for(int8: np.ndarray, fp32: np.ndarray, target: float, *, limit: float | None = None) -> float:
    """The smallest margin threshold with which guarded int8 agrees with fp32 on ``target`` of the rows.

    Rows whose int8 margin is below the threshold take fp32's answer, so they always agree; a
    disagreement survives only when its int8 margin is at or above the threshold. With ``k``
    the number of disagreements allowed to survive, the threshold sits just above the
    (k+1)-th largest disagreement margin, rounded up to 1e-3; 0.0 means int8 alone is enough.

    ``k`` is at most ``(1 - target) * n`` and, with ``limit``, small enough that the 95% upper
    bound on the surviving disagreement rate stays within ``1 - limit``: on a small tuning set
    that leaves no disagreement unguarded (k = 0), which a few hundred images cannot justify
    otherwise.
    """
    n = len(int8)
    if n == 0:
        return 0.0
    wrong = int8.argmax(1) != fp32.argmax(1)
    margins = np.sort(top2_margin(int8)[wrong])[::-1]
    allowed = math.floor((1.0 - target) * n + 1e-9)
    while limit is not None and allowed > 0 and wilson_upper(allowed, n) > 1.0 - limit:
        allowed -= 1
    if len(margins) <= allowed:
        return 0.0
    return min(1.0, math.floor(float(margins[allowed]) * 1000 + 1) / 1000)


def guarded(int8: np.ndarray, fp32: np.ndarray, min_margin: float) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities served with the guard, mask of the rows that went to fp32)."""
    fall = top2_margin(int8) < min_margin
    return np.where(fall[:, None], fp32, int8), fall

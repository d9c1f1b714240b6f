"""The margin guard's arithmetic (aiforge.tasks.image.fallback): no model, just probability tables."""

from __future__ import annotations

import numpy as np
import pytest

from aiforge.tasks.image.fallback import guarded, min_margin_for, top2_margin, wilson_upper


def _probs(rows: list[list[float]]) -> np.ndarray:
    return np.asarray(rows, dtype=np.float32)


def test_top2_margin() -> None:
    p = _probs([[0.7, 0.2, 0.1], [0.1, 0.45, 0.45], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(top2_margin(p), [0.5, 0.0, 1.0], atol=1e-6)
    assert top2_margin(_probs([[1.0], [1.0]])).tolist() == [1.0, 1.0]


def _table(n: int, wrong_margins: list[float], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """fp32 and int8 probabilities for n rows, int8 flipping the rows given by their int8 margins."""
    rng = np.random.default_rng(seed)
    fp32 = np.zeros((n, 3), np.float32)
    fp32[:, 0] = rng.uniform(0.6, 0.95, n)
    fp32[:, 1] = 1 - fp32[:, 0]
    int8 = fp32.copy()
    for i, m in enumerate(wrong_margins):  # int8 prefers class 1 by m
        int8[i, 1], int8[i, 0] = (1 + m) / 2, (1 - m) / 2
    return int8, fp32


def test_threshold_guards_just_enough_disagreements() -> None:
    wrong = [0.30, 0.20, 0.10, 0.05, 0.01]
    int8, fp32 = _table(1000, wrong)
    assert (int8.argmax(1) == fp32.argmax(1)).mean() == pytest.approx(0.995)
    # 0.997 of 1000 rows tolerates 3 surviving disagreements: guard the two smallest margins
    t = min_margin_for(int8, fp32, 0.997)
    assert 0.05 - 1e-6 < t <= 0.051  # just above the 4th largest disagreement margin (float32 rounding)
    served, fell = guarded(int8, fp32, t)
    assert (served.argmax(1) == fp32.argmax(1)).mean() == pytest.approx(0.997)
    assert fell[3] and fell[4] and not fell[2]
    # a stricter target guards more, a looser one nothing
    assert 0.30 - 1e-6 < min_margin_for(int8, fp32, 1.0) <= 0.301
    assert min_margin_for(int8, fp32, 0.99) == 0.0


def test_small_tuning_sets_guard_every_disagreement_seen() -> None:
    int8, fp32 = _table(400, [0.4, 0.02])
    # 0.997 of 400 would let one disagreement through, but one in 400 cannot bound the rate under 1%
    assert wilson_upper(1, 400) > 0.01 and wilson_upper(0, 400) < 0.01
    assert 0.02 - 1e-6 < min_margin_for(int8, fp32, 0.997) <= 0.021
    assert 0.4 - 1e-6 < min_margin_for(int8, fp32, 0.997, limit=0.99) <= 0.401
    # with many rows the confidence bound no longer binds
    big8, big32 = _table(4000, [0.4, 0.3, 0.2, 0.02])
    t = min_margin_for(big8, big32, 0.99925, limit=0.99)
    assert t == min_margin_for(big8, big32, 0.99925) and 0.02 - 1e-6 < t <= 0.021


def test_guarded_rows_are_fp32_rows_and_the_rest_int8() -> None:
    int8, fp32 = _table(50, [0.3, 0.01])
    served, fell = guarded(int8, fp32, 0.25)
    np.testing.assert_array_equal(served[fell], fp32[fell])
    np.testing.assert_array_equal(served[~fell], int8[~fell])
    assert guarded(int8, fp32, 0.0)[1].sum() == 0
    assert min_margin_for(int8[:0], fp32[:0], 0.99) == 0.0

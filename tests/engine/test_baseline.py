"""The paired bootstrap of audit/baseline.py and the margin gate's decision, on measured arrays."""

from __future__ import annotations

import numpy as np
import pytest

from aiforge.audit.baseline import (
    BaselineResult,
    compare_with_baselines,
    majority_baseline,
    margin_verdict,
    paired_bootstrap,
)


def _correct(rng: np.random.Generator, n: int, p: float) -> np.ndarray:
    return (rng.random(n) < p).astype(float)


def test_paired_bootstrap_covers_the_difference_and_pairing_narrows_it() -> None:
    rng = np.random.default_rng(1)
    base = _correct(rng, 2000, 0.8)
    # the model gets right what the baseline gets right, plus ~half of the rest: highly correlated
    model = np.maximum(base, _correct(rng, 2000, 0.5))
    iv = paired_bootstrap(model, base, resamples=1000, seed=0)
    diff = model.mean() - base.mean()
    assert iv.low < diff < iv.high and iv.low > 0
    # an unpaired interval (independent resampling of each) is wider than the paired one
    idx_a, idx_b = rng.integers(0, 2000, (1000, 2000)), rng.integers(0, 2000, (1000, 2000))
    unpaired = np.quantile(model[idx_a].mean(1) - base[idx_b].mean(1), [0.025, 0.975])
    assert iv.high - iv.low < unpaired[1] - unpaired[0]
    # seeded: same seed, same interval; another seed, (slightly) another one
    assert paired_bootstrap(model, base, resamples=1000, seed=0) == iv
    assert paired_bootstrap(model, base, resamples=1000, seed=1) != iv


def test_paired_bootstrap_of_identical_scores_is_zero_and_bad_shapes_fail() -> None:
    scores = _correct(np.random.default_rng(0), 500, 0.7)
    iv = paired_bootstrap(scores, scores.copy())
    assert (iv.low, iv.high) == (0.0, 0.0)
    with pytest.raises(ValueError, match="same non-zero length"):
        paired_bootstrap(scores, scores[:-1])


def test_best_baseline_is_chosen_on_validation_never_test_and_a_loss_warns() -> None:
    rng = np.random.default_rng(2)
    truth = rng.integers(0, 3, 600)
    good_on_test = _correct(rng, 600, 0.95)
    candidates = [
        majority_baseline(truth.tolist(), truth[:300].tolist(), truth.tolist()),
        BaselineResult("a", "accuracy", 0.90, float(_correct(rng, 600, 0.6).mean()), 0.1,
                       test_scores=_correct(rng, 600, 0.6)),
        BaselineResult("b", "accuracy", 0.85, float(good_on_test.mean()), 0.1, test_scores=good_on_test),
    ]
    model = _correct(rng, 600, 0.8)
    report = compare_with_baselines(metric="accuracy", candidates=candidates, model_validation=0.8,
                                    model_test=float(model.mean()), model_test_scores=model, fit_seconds=10.0,
                                    hint="try harder")
    assert report.best == "a"  # the better one on validation, though "b" is better on test
    assert report.difference == pytest.approx(model.mean() - candidates[1].test_scores.mean())
    assert report.interval[0] > 0 and not report.warning
    lost = compare_with_baselines(metric="accuracy", candidates=candidates[2:], model_validation=0.8,
                                  model_test=float(model.mean()), model_test_scores=model, fit_seconds=10.0,
                                  hint="try harder")
    assert lost.interval[1] < 0 and lost.beats is False and "does not beat" in lost.warning and lost.hint


def test_margin_verdict_passes_fails_below_and_is_undecided_when_straddling() -> None:
    stored = {"metric": "accuracy", "best": "x", "difference": 0.03, "interval": [0.01, 0.05], "skipped": False}
    assert margin_verdict(stored, 0.01).passed
    below = margin_verdict(stored, 0.06)
    assert not below.passed and "below margin" in below.note and below.lower == 0.01
    undecided = margin_verdict(stored, 0.03)
    assert not undecided.passed and undecided.note.startswith("undecided")
    assert not margin_verdict(None, 0.0).passed
    assert "skipped" in margin_verdict({"skipped": True, "reason": "r"}, 0.0).note

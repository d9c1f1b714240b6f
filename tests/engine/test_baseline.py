"""audit/baseline.py on measured arrays: the paired bootstrap, the shared classifier skeleton, its HTML, the gate."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier

from aiforge.audit.baseline import (
    BaselineResult,
    baseline_html,
    classifier_baselines,
    compare_with_baselines,
    majority_baseline,
    margin_verdict,
    paired_bootstrap,
    stratified_subsample,
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


def test_stratified_subsample_keeps_each_label_share_and_is_seeded() -> None:
    labels = np.array(["a"] * 900 + ["b"] * 90 + ["c"] * 10)
    keep = stratified_subsample(labels, 100, seed=0)
    assert len(keep) == 100 and np.all(np.diff(keep) > 0)
    assert dict(zip(*np.unique(labels[keep], return_counts=True), strict=True)) == {"a": 90, "b": 9, "c": 1}
    assert np.array_equal(stratified_subsample(labels, 100, seed=0), keep)
    assert not np.array_equal(stratified_subsample(labels, 100, seed=1), keep)
    assert np.array_equal(stratified_subsample(labels, 5000, seed=0), np.arange(1000))


def test_classifier_baselines_fit_on_a_bounded_sample_and_render_escaped_html() -> None:
    rng = np.random.default_rng(3)
    centers = rng.normal(size=(3, 5)) * 4
    y = {split: rng.integers(0, 3, n) for split, n in (("train", 600), ("validation", 150), ("test", 300))}
    x = {split: centers[labels] + rng.normal(size=(len(labels), 5)) for split, labels in y.items()}
    asked: list[tuple[str, int]] = []

    def features(split: str, indices: np.ndarray | None) -> np.ndarray:
        rows = x[split] if indices is None else x[split][indices]
        asked.append((split, len(rows)))
        return rows

    model = np.zeros(300)  # a model that gets every test item wrong
    report = classifier_baselines(estimators=[("1-NN <raw>", KNeighborsClassifier(n_neighbors=1))],
                                  features=features, train_labels=y["train"].tolist(),
                                  validation_labels=y["validation"].tolist(), test_labels=y["test"].tolist(),
                                  max_train=200, model_validation=0.0, model_test=0.0, model_test_scores=model,
                                  fit_seconds=5.0, hint="try <b>more</b>", seed=0)
    assert asked == [("train", 200), ("validation", 150), ("test", 300)]  # features built once per split
    assert [c.name for c in report.candidates] == ["majority class", "1-NN <raw>"]
    assert report.best == "1-NN <raw>" and report.baseline_test > 0.9 and report.interval[1] < 0
    page = baseline_html(report.to_dict())
    assert "1-NN &lt;raw&gt; (best on validation)" in page and "<raw>" not in page
    assert "Warning:</b> the model does not beat" in page and "try &lt;b&gt;more&lt;/b&gt;" in page
    assert "paired bootstrap CI" in page and report.html() == page
    assert baseline_html(None) == ""
    skipped = classifier_baselines(estimators=[], features=features, train_labels=[], validation_labels=[],
                                   test_labels=None, max_train=1, model_validation=None, model_test=None,
                                   model_test_scores=None, fit_seconds=0.0, hint="", seed=0, enabled=False)
    assert skipped.skipped and "Skipped (baseline: false in the spec)" in skipped.html()

"""classification_metrics on hand-made inputs with answers worked out by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aiforge.audit.metrics import classification_metrics

LABELS = ["a", "b", "c"]


def _onehot(preds: list[str], labels: list[str]) -> np.ndarray:
    probs = np.full((len(preds), len(labels)), 0.1 / max(len(labels) - 1, 1))
    for row, y in enumerate(preds):
        probs[row, labels.index(y)] = 0.9
    return probs


def test_three_classes_by_hand() -> None:
    truth = ["a", "a", "b", "c"]
    metrics = classification_metrics(truth, _onehot(["a", "b", "b", "a"], LABELS), LABELS)
    assert metrics.n == 4
    assert metrics.accuracy == pytest.approx(0.5)
    # rows are truth, columns predictions
    assert metrics.confusion == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]
    assert metrics.per_class["a"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert metrics.per_class["b"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert metrics.per_class["c"] == pytest.approx({"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1})
    assert metrics.macro_f1 == pytest.approx((0.5 + 2 / 3 + 0.0) / 3)
    assert metrics.top5_accuracy == 1.0  # three labels: the true one is always in the top 5
    assert metrics.labels == LABELS
    assert metrics.headline() == {"accuracy": 0.5, "macro_f1": pytest.approx(7 / 18), "top5_accuracy": 1.0}


def test_perfect_predictions() -> None:
    truth = ["c", "b", "a", "c"]
    metrics = classification_metrics(truth, _onehot(truth, LABELS), LABELS)
    assert metrics.accuracy == 1.0
    assert metrics.macro_f1 == 1.0
    assert metrics.confusion == [[1, 0, 0], [0, 1, 0], [0, 0, 2]]


def test_label_absent_from_truth_is_left_out_of_macro_f1() -> None:
    labels = ["a", "b", "c", "d"]
    truth = ["a", "b", "c"]
    metrics = classification_metrics(truth, _onehot(truth, labels), labels)
    assert metrics.per_class["d"]["support"] == 0
    assert metrics.macro_f1 == 1.0


def test_top5_accuracy_counts_the_true_label_in_the_five_highest() -> None:
    labels = [f"l{i}" for i in range(7)]
    # each row ranks labels l0 > l1 > ... > l6
    probs = np.tile(np.array([0.30, 0.25, 0.15, 0.12, 0.08, 0.06, 0.04]), (4, 1))
    truth = ["l0", "l4", "l5", "l6"]  # ranks 1, 5, 6, 7
    metrics = classification_metrics(truth, probs, labels)
    assert metrics.accuracy == pytest.approx(0.25)
    assert metrics.top5_accuracy == pytest.approx(0.5)


def test_metrics_serialise_to_json() -> None:
    metrics = classification_metrics(["a", "b"], _onehot(["a", "a"], LABELS), LABELS)
    data = json.loads(json.dumps(metrics.to_dict()))
    assert data["accuracy"] == 0.5
    assert data["confusion"] == [[1, 0, 0], [1, 0, 0], [0, 0, 0]]
    assert set(data["per_class"]) == set(LABELS)


def test_macro_f1_agrees_with_classification_metrics() -> None:
    from aiforge.audit.metrics import macro_f1

    rng = np.random.default_rng(3)
    probs = rng.random((200, 6))
    truth = rng.integers(0, 6, size=200)
    labels = [f"c{i}" for i in range(6)]
    full = classification_metrics([labels[i] for i in truth], probs, labels)
    assert abs(macro_f1(truth, probs.argmax(1)) - full.macro_f1) < 1e-12
    assert 0.0 < full.macro_f1 < 0.5  # random scores: far from perfect

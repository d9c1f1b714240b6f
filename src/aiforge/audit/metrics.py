"""Classification metrics computed with numpy only (usable beside the torch-free Runtime)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

__all__ = ["Metrics", "classification_metrics", "macro_f1", "metric_intervals", "wilson"]


@dataclass(frozen=True)
class Metrics:
    """Headline and per-class scores of a classifier on one data set."""

    n: int
    accuracy: float
    macro_f1: float
    top5_accuracy: float
    per_class: dict[str, dict[str, float]]
    labels: list[str]
    confusion: list[list[int]]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)

    def write(self, path: Path) -> None:
        """Write as indented JSON."""
        path.write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")

    def headline(self) -> dict[str, float]:
        """The few numbers a summary shows."""
        return {"accuracy": self.accuracy, "macro_f1": self.macro_f1, "top5_accuracy": self.top5_accuracy}


def classification_metrics(y_true: list[str], probabilities: np.ndarray, labels: list[str]) -> Metrics:
    """Accuracy, macro-F1, top-5 accuracy, per-class P/R/F1 and confusion matrix.

    ``probabilities`` has one row per example and one column per entry of ``labels``.
    """
    index = {y: i for i, y in enumerate(labels)}
    truth = np.array([index[y] for y in y_true], dtype=np.int64)
    pred = probabilities.argmax(axis=1)
    k = len(labels)
    conf = np.zeros((k, k), dtype=np.int64)
    np.add.at(conf, (truth, pred), 1)
    tp = np.diag(conf).astype(np.float64)
    support = conf.sum(axis=1).astype(np.float64)
    predicted = conf.sum(axis=0).astype(np.float64)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(k), where=denom > 0)
    present = support > 0
    top = min(5, k)
    topk = np.argpartition(-probabilities, top - 1, axis=1)[:, :top]
    top5 = float(np.mean([t in row for t, row in zip(truth, topk, strict=True)])) if len(truth) else 0.0
    per_class = {
        y: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
            "support": int(support[i])}
        for i, y in enumerate(labels)
    }
    return Metrics(
        n=len(truth),
        accuracy=float((pred == truth).mean()) if len(truth) else 0.0,
        macro_f1=float(f1[present].mean()) if present.any() else 0.0,
        top5_accuracy=top5,
        per_class=per_class,
        labels=list(labels),
        confusion=conf.tolist(),
    )


def macro_f1(truth: list[int] | np.ndarray, pred: np.ndarray) -> float:
    """Macro-averaged F1 over the classes present in ``truth`` (integer class ids)."""
    t = np.asarray(truth)
    scores = []
    for k in np.unique(t):
        tp = float(np.sum((pred == k) & (t == k)))
        predicted, actual = float(np.sum(pred == k)), float(np.sum(t == k))
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        scores.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return float(np.mean(scores)) if scores else 0.0


def metric_intervals(truth: list[str], probabilities: np.ndarray, labels: list[str], *, resamples: int = 200,
                     confidence: float = 0.95, seed: int = 0) -> dict[str, list[float]]:
    """Percentile bootstrap intervals of accuracy and macro-F1, and the Wilson interval of top-5 accuracy."""
    index = {y: i for i, y in enumerate(labels)}
    t = np.array([index[y] for y in truth], dtype=np.int64)
    if not len(t):
        return {}
    pred = probabilities.argmax(axis=1)
    top = min(5, len(labels))
    topk = np.argpartition(-probabilities, top - 1, axis=1)[:, :top]
    hits = float(np.sum(np.any(topk == t[:, None], axis=1)))
    rng = np.random.default_rng(seed)
    acc, f1 = np.zeros(resamples), np.zeros(resamples)
    for b in range(resamples):
        idx = rng.integers(0, len(t), len(t))
        acc[b] = np.mean(pred[idx] == t[idx])
        f1[b] = macro_f1(t[idx], pred[idx])
    lo, hi = (1 - confidence) / 2 * 100, (1 + confidence) / 2 * 100
    return {"accuracy": [float(np.percentile(acc, lo)), float(np.percentile(acc, hi))],
            "macro_f1": [float(np.percentile(f1, lo)), float(np.percentile(f1, hi))],
            "top5_accuracy": wilson(hits, float(len(t)), confidence)}


def wilson(successes: float, n: float, confidence: float = 0.95) -> list[float]:
    """The Wilson score interval of a proportion ``successes / n`` ([0, 1] when ``n`` is 0)."""
    if n <= 0:
        return [0.0, 1.0]
    z = float(NormalDist().inv_cdf((1 + confidence) / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]

"""The intent layer: a softmax head on MiniLM sentence embeddings, with a calibrated out-of-scope threshold.

Training (scikit-learn, at build time) fits a multinomial logistic regression on the same
unit-length embeddings the encoder graph produces; serving is ``softmax(x @ W.T + b)`` in
numpy. The threshold on the top probability is chosen on held-out predictions
(out-of-fold, so a few examples per intent suffice): with out-of-scope examples it
maximises the mean of in-scope accuracy and out-of-scope recall; without them it keeps
``target_in_scope_recall`` of in-scope utterances.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aiforge.bundle.out_of_scope import DistanceScorer, NearestScorer
from aiforge.errors import BundleError, DataError

__all__ = ["INTENTS_FILE", "IntentModel", "calibrate_threshold", "fit_head", "fit_scorer", "out_of_fold_distances"]


INTENTS_FILE = "intents.json"


WEIGHTS = "intent_weights.npy"


BIAS = "intent_bias.npy"


EXAMPLES = "intent_examples.npy"


EXAMPLE_LABELS = "intent_example_labels.npy"


MEANS = "intent_means.npy"


PRECISION = "intent_precision.npy"


@dataclass
class IntentModel:
    """Labels, head weights, threshold and per-intent handlers."""

    labels: list[str]
    weights: np.ndarray
    bias: np.ndarray
    threshold: float
    handlers: dict[str, dict[str, str | None]] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    examples: np.ndarray | None = None  # unit vectors of the training examples
    example_labels: np.ndarray | None = None
    min_example_similarity: float = 0.0
    # method "distance" or "nearest": out of scope when the scorer's score is above distance_threshold
    scorer: DistanceScorer | NearestScorer | None = None
    distance_threshold: float | None = None

    def detect(self, vector: np.ndarray) -> tuple[str | None, float, float]:
        """(intent or None when out of scope, top probability, similarity to the intent's nearest example;
        with the distance or nearest method the third value is the scorer's score: the distance to the
        nearest intent mean, or one minus the cosine to the nearest training example)."""
        probs = self.predict_proba(vector[None, :])[0]
        best = int(probs.argmax())
        conf = float(probs[best])
        if self.scorer is not None and self.distance_threshold is not None:
            dist = float(self.scorer.score(vector[None, :])[0])
            return (self.labels[best] if dist <= self.distance_threshold else None), conf, dist
        sim = 1.0
        if self.examples is not None and self.example_labels is not None and len(self.examples):
            own = self.examples[self.example_labels == best]
            sim = float((own @ vector).max()) if len(own) else -1.0
        accepted = conf >= self.threshold and sim >= self.min_example_similarity
        return (self.labels[best] if accepted else None), conf, sim

    def predict_proba(self, vectors: np.ndarray) -> np.ndarray:
        """Probabilities over ``labels`` for unit embeddings (rows)."""
        logits = vectors @ self.weights.T + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return np.asarray(p / p.sum(axis=1, keepdims=True), dtype=np.float32)

    def save(self, directory: Path) -> None:
        """Write ``intents.json`` and the weight files."""
        np.save(directory / WEIGHTS, self.weights.astype(np.float32), allow_pickle=False)
        np.save(directory / BIAS, self.bias.astype(np.float32), allow_pickle=False)
        if self.examples is not None and self.example_labels is not None:
            np.save(directory / EXAMPLES, self.examples.astype(np.float32), allow_pickle=False)
            np.save(directory / EXAMPLE_LABELS, self.example_labels.astype(np.int64), allow_pickle=False)
        if isinstance(self.scorer, DistanceScorer):
            np.save(directory / MEANS, self.scorer.means.astype(np.float32), allow_pickle=False)
            np.save(directory / PRECISION, self.scorer.precision.astype(np.float32), allow_pickle=False)
        meta = {"labels": self.labels, "threshold": self.threshold, "handlers": self.handlers,
                "calibration": self.calibration, "min_example_similarity": self.min_example_similarity,
                "distance_threshold": self.distance_threshold,
                "method": None if self.scorer is None else
                "nearest" if isinstance(self.scorer, NearestScorer) else "distance"}
        (directory / INTENTS_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> IntentModel | None:
        """The bundle's intent model, or None when it has none.

        Raises:
            BundleError: the files are unreadable or do not fit together.
        """
        if not (directory / INTENTS_FILE).is_file():
            return None
        try:
            meta = json.loads((directory / INTENTS_FILE).read_text(encoding="utf-8"))
            w = np.load(directory / WEIGHTS, allow_pickle=False)
            b = np.load(directory / BIAS, allow_pickle=False)
            model = cls(list(meta["labels"]), w, b, float(meta["threshold"]), dict(meta.get("handlers", {})),
                        dict(meta.get("calibration", {})),
                        min_example_similarity=float(meta.get("min_example_similarity", 0.0)))
            if (directory / EXAMPLES).is_file():
                model.examples = np.load(directory / EXAMPLES, allow_pickle=False)
                model.example_labels = np.load(directory / EXAMPLE_LABELS, allow_pickle=False)
            if meta.get("distance_threshold") is not None:
                if meta.get("method") == "nearest":
                    if model.examples is None:
                        raise ValueError(f"method nearest needs {EXAMPLES}")
                    model.scorer = NearestScorer(model.examples)
                else:
                    model.scorer = DistanceScorer(np.load(directory / MEANS, allow_pickle=False),
                                                  np.load(directory / PRECISION, allow_pickle=False))
                model.distance_threshold = float(meta["distance_threshold"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BundleError(f"{directory}: intent files are unreadable ({exc}).") from exc
        if w.shape[0] != len(model.labels) or b.shape != (len(model.labels),):
            raise BundleError(f"{directory}: intent weights do not match the {len(model.labels)} labels.")
        return model


def fit_head(x: np.ndarray, y: np.ndarray, n_labels: int, *, C: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression; ``(weights [n_labels, dim], bias [n_labels])``."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=C, max_iter=2000)
    clf.fit(x, y)
    w = np.zeros((n_labels, x.shape[1]), dtype=np.float32)
    b = np.full(n_labels, -1e4, dtype=np.float32)  # a label absent from this fit is never predicted
    w[clf.classes_] = clf.coef_ if len(clf.classes_) > 2 else np.vstack([-clf.coef_, clf.coef_])
    b[clf.classes_] = clf.intercept_ if len(clf.classes_) > 2 else np.array([-clf.intercept_[0], clf.intercept_[0]])
    return w, b


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def out_of_fold(x: np.ndarray, y: np.ndarray, n_labels: int, *, C: float, folds: int = 5,
                seed: int = 0) -> np.ndarray:
    """Held-out probabilities for every training row (k-fold, stratified)."""
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(y, minlength=n_labels)
    k = int(min(folds, counts[counts > 0].min()))
    if k < 2:
        raise DataError("every intent needs at least 2 examples to calibrate the out-of-scope threshold.")
    probs = np.zeros((len(y), n_labels), dtype=np.float32)
    for train_idx, held_idx in StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(x, y):
        w, b = fit_head(x[train_idx], y[train_idx], n_labels, C=C)
        probs[held_idx] = _softmax(x[held_idx] @ w.T + b)
    return probs


def fit_scorer(method: str, x: np.ndarray, y: np.ndarray, n_labels: int) -> DistanceScorer | NearestScorer:
    """The out-of-scope scorer of ``method``: nearest training example (nearest) or nearest intent mean (distance)."""
    return NearestScorer.fit(x) if method == "nearest" else DistanceScorer.fit(x, y, n_labels)


def out_of_fold_distances(x: np.ndarray, y: np.ndarray, n_labels: int, *, folds: int = 5,
                          seed: int = 0, method: str = "distance") -> np.ndarray:
    """Held-out out-of-scope score for every training row (k-fold, stratified): the distance to the
    nearest intent mean (``method`` distance) or one minus the cosine to the nearest example (nearest)."""
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(y, minlength=n_labels)
    k = int(min(folds, counts[counts > 0].min()))
    if k < 2:
        raise DataError("every intent needs at least 2 examples to calibrate the out-of-scope threshold.")
    out = np.zeros(len(y), dtype=np.float32)
    for train_idx, held_idx in StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(x, y):
        out[held_idx] = fit_scorer(method, x[train_idx], y[train_idx], n_labels).score(x[held_idx])
    return out


def calibrate_threshold(in_scope: np.ndarray, y: np.ndarray, oos: np.ndarray | None, *,
                        target_recall: float) -> dict[str, Any]:
    """Choose the confidence threshold from held-out in-scope probabilities (and out-of-scope ones)."""
    conf = in_scope.max(axis=1)
    correct = in_scope.argmax(axis=1) == y
    if oos is not None and len(oos):
        oos_conf = oos.max(axis=1)
        grid = np.unique(np.concatenate([conf, oos_conf, [0.0]]))
        best_t, best = 0.0, -1.0
        for t in grid:
            score = 0.5 * float(((conf >= t) & correct).mean()) + 0.5 * float((oos_conf < t).mean())
            if score > best:
                best_t, best = float(t), score
        method = "max mean of in-scope accuracy and out-of-scope recall (out-of-fold)"
        oos_recall: float | None = float((oos_conf < best_t).mean())
    else:
        best_t = float(np.quantile(conf, 1.0 - target_recall)) if target_recall < 1 else 0.0
        method = f"keep {target_recall:.0%} of in-scope utterances (out-of-fold)"
        oos_recall = None
    return {"threshold": best_t, "method": method, "in_scope_samples": len(y),
            "out_of_scope_samples": 0 if oos is None else len(oos),
            "in_scope_accepted": float((conf >= best_t).mean()),
            "in_scope_accuracy_at_threshold": float(((conf >= best_t) & correct).mean()),
            "out_of_fold_accuracy": float(correct.mean()), "out_of_scope_recall": oos_recall}

"""Out-of-scope handling of a text classifier (``model.out_of_scope``): split, fit, calibrate, score.

Rows labelled ``out_of_scope.label`` are taken out of every split before training (they are
not a class). After training, class means and a shared precision matrix are fitted on the
training features (the pooled encoder output the ONNX graph also returns) with ``method: distance``, or
the training features themselves are kept with ``method: nearest``; the score (minus the top probability
by default, that distance, or one minus the cosine to the nearest training example)
threshold is calibrated on the validation split (see :mod:`aiforge.audit.out_of_scope`),
and in-scope accuracy and out-of-scope recall are measured on validation and test.
The bundle stores ``oos_means.npy`` / ``oos_precision.npy`` (distance) or ``oos_examples.npy``
(nearest); ``TextRuntime`` serves a rejected text as the ``out_of_scope.name`` label.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aiforge.audit.out_of_scope import calibrate_rejection, rejection_curve
from aiforge.bundle.out_of_scope import DistanceScorer, NearestScorer
from aiforge.tasks.text.data import TextDataset, TextSplits
from aiforge.tasks.text.spec import OutOfScopeSpec

__all__ = ["OOS_EXAMPLES", "OOS_MEANS", "OOS_PRECISION", "OutOfScopeFit", "fit_out_of_scope", "in_scope_splits"]


OOS_MEANS = "oos_means.npy"


OOS_PRECISION = "oos_precision.npy"


OOS_EXAMPLES = "oos_examples.npy"


@dataclass
class OutOfScopeFit:
    """The fitted scorer, its threshold, and what was measured."""

    spec: OutOfScopeSpec
    scorer: DistanceScorer | NearestScorer | None  # None with method probability (score = -top probability)
    threshold: float
    calibration: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)

    def pipeline(self) -> dict[str, Any]:
        """The ``out_of_scope`` block of pipeline.json."""
        if self.scorer is None:
            return {"name": self.spec.name, "method": "probability", "threshold": self.threshold}
        if isinstance(self.scorer, NearestScorer):
            return {"name": self.spec.name, "method": "nearest", "threshold": self.threshold,
                    "examples": OOS_EXAMPLES, "features": "features"}
        return {"name": self.spec.name, "method": "distance", "threshold": self.threshold, "means": OOS_MEANS,
                "precision": OOS_PRECISION, "features": "features"}


def _split(ds: TextDataset, label: str | None) -> tuple[TextDataset, TextDataset | None]:
    if label is None:
        return ds, None
    inside = [i for i, y in enumerate(ds.labels) if y != label]
    outside = [i for i, y in enumerate(ds.labels) if y == label]
    return ds.subset(inside), (ds.subset(outside) if outside else None)


def in_scope_splits(splits: TextSplits, spec: OutOfScopeSpec) -> tuple[TextSplits, dict[str, TextDataset | None]]:
    """The splits without out-of-scope rows, and those rows per split (None where there are none)."""
    train, oos_train = _split(splits.train, spec.label)
    validation, oos_val = _split(splits.validation, spec.label)
    test, oos_test = _split(splits.test, spec.label) if splits.test is not None else (None, None)
    labels = [y for y in splits.labels if y != spec.label]
    return TextSplits(train, validation, test, labels), {"train": oos_train, "validation": oos_val, "test": oos_test}


def fit_out_of_scope(spec: OutOfScopeSpec, *, labels: list[str], features: Any,
                     splits: TextSplits, oos: dict[str, TextDataset | None], probs: Any) -> OutOfScopeFit:
    """Fit the scorer on training features, calibrate on validation, measure on validation and test.

    ``features(texts)`` gives the pooled encoder features of the fitted model; ``probs(texts)`` its
    class probabilities.
    """
    index = {y: i for i, y in enumerate(labels)}
    y_train = np.array([index[y] for y in splits.train.labels])
    scorer: DistanceScorer | NearestScorer | None = None
    if spec.method == "distance":
        scorer = DistanceScorer.fit(features(splits.train.texts), y_train, len(labels))
    elif spec.method == "nearest":
        scorer = NearestScorer.fit(features(splits.train.texts))

    def scored(ds: TextDataset | None) -> tuple[np.ndarray, np.ndarray] | None:
        if ds is None or not len(ds):
            return None
        p = np.asarray(probs(ds.texts))
        return (scorer.score(features(ds.texts)) if scorer is not None else -p.max(axis=1)), p

    val = scored(splits.validation)
    if val is None:
        raise ValueError("out-of-scope calibration needs a validation split")
    y_val = np.array([index[y] for y in splits.validation.labels])
    val_correct = val[1].argmax(1) == y_val
    oos_val = scored(oos["validation"])
    calibration = calibrate_rejection(val[0], val_correct, None if oos_val is None else oos_val[0],
                                      target_in_scope_recall=spec.target_in_scope_recall)
    fixed = None if spec.threshold is None else (spec.threshold if scorer is not None else -spec.threshold)
    threshold = float(fixed) if fixed is not None else float(calibration["threshold"])
    calibration["chosen"] = "fixed in spec" if spec.threshold is not None else "calibrated"
    metrics: dict[str, Any] = {}
    for part, ds in (("validation", splits.validation), ("test", splits.test)):
        s = scored(ds)
        if s is None or ds is None:
            continue
        truth = np.array([index[y] for y in ds.labels])
        o = scored(oos[part])
        at = rejection_curve(s[0], s[1].argmax(1) == truth, None if o is None else o[0], [threshold])[0]
        metrics[part] = {"in_scope": len(ds), "out_of_scope": 0 if o is None else len(o[0]),
                         "in_scope_accuracy": at["in_scope_accuracy"], "in_scope_accepted": at["in_scope_accepted"],
                         "out_of_scope_recall": at["out_of_scope_recall"],
                         "in_scope_accuracy_without_rejection": float((s[1].argmax(1) == truth).mean())}
    return OutOfScopeFit(spec, scorer, threshold, calibration, metrics)

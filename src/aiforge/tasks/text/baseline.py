"""The text baselines: majority class, and TF-IDF (word 1-2 grams) + logistic regression.

Fitted on (a seeded sample of) the training split, chosen on validation, scored on the same test
texts as the model: seconds on a CPU, bounded by ``MAX_TRAIN``.
"""

from __future__ import annotations

import time

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from aiforge.audit.baseline import (
    BaselineReport,
    compare_with_baselines,
    majority_baseline,
    scored_baseline,
    skipped_report,
    subsample,
)
from aiforge.tasks.text.data import TextSplits

__all__ = ["HINT", "MAX_TRAIN", "text_baselines"]

MAX_TRAIN = 50_000  # training texts the TF-IDF baseline is fitted on (seeded sample above that)
HINT = ("more labelled data, or model.mode: full (fine-tune the encoder); a frozen sentence encoder can lose to "
        "word counts when the classes hinge on specific words")


def text_baselines(splits: TextSplits, *, model_validation: float, model_test: float | None,
                   model_test_scores: np.ndarray | None, fit_seconds: float, seed: int,
                   enabled: bool = True) -> BaselineReport:
    """Majority class and TF-IDF + logistic regression against the model (accuracy)."""
    if not enabled:
        return skipped_report("accuracy")
    start = time.perf_counter()
    train, val, test = splits.train, splits.validation, splits.test
    keep = subsample(len(train), MAX_TRAIN, seed=seed)
    x_train = [train.texts[i] for i in keep]
    y_train = [train.labels[i] for i in keep]
    tfidf = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
                          LogisticRegression(C=10.0, max_iter=300))
    candidates = [
        majority_baseline(y_train, val.labels, test.labels if test else None),
        scored_baseline("TF-IDF + logistic regression", tfidf, x_train=x_train, y_train=y_train,
                        x_validation=val.texts, y_validation=val.labels,
                        x_test=test.texts if test else None, y_test=test.labels if test else None),
    ]
    return compare_with_baselines(metric="accuracy", candidates=candidates, model_validation=model_validation,
                                  model_test=model_test, model_test_scores=model_test_scores,
                                  fit_seconds=fit_seconds, hint=HINT, seed=seed,
                                  seconds=time.perf_counter() - start)

"""The intent baselines: majority class and TF-IDF nearest neighbour, out of fold on the intent examples.

Intents have no test split: the head's accuracy is measured out of fold (5 stratified folds,
:func:`aiforge.tasks.chat.intents.out_of_fold`), so the baselines are scored on the same folds and
the same held-out examples, and the paired bootstrap resamples those examples. With one fold
set, the out-of-fold score both picks the best baseline and compares it (reported as such).
"""

from __future__ import annotations

import time

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.model_selection import StratifiedKFold

from aiforge.audit.baseline import BaselineReport, BaselineResult, compare_with_baselines, skipped_report

__all__ = ["HINT", "intent_baselines"]

HINT = "add more (and more varied) examples per intent; a few examples each are matched as well by word overlap"


def _folds(y: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    counts = np.bincount(y)
    k = int(min(folds, counts[counts > 0].min()))
    return list(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))


def _out_of_fold(name: str, predict: object, texts: list[str], y: np.ndarray,
                 splits: list[tuple[np.ndarray, np.ndarray]]) -> BaselineResult:
    start = time.perf_counter()
    pred = np.empty(len(y), dtype=np.int64)
    for train_idx, held_idx in splits:
        pred[held_idx] = predict([texts[i] for i in train_idx], y[train_idx],  # type: ignore[operator]
                                 [texts[i] for i in held_idx])
    scores = (pred == y).astype(np.float64)
    return BaselineResult(name, "accuracy", float(scores.mean()), float(scores.mean()), time.perf_counter() - start,
                          test_scores=scores)


def _majority(train: list[str], y: np.ndarray, held: list[str]) -> np.ndarray:
    return np.full(len(held), int(np.bincount(y).argmax()))


def _tfidf_nn(train: list[str], y: np.ndarray, held: list[str]) -> np.ndarray:
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    a = vec.fit_transform(train)
    b = vec.transform(held)
    sim = (b @ a.T).toarray()  # rows are L2-normalised: cosine similarity
    return np.asarray(y[sim.argmax(axis=1)])


def intent_baselines(texts: list[str], y: np.ndarray, oof_probs: np.ndarray, *, fit_seconds: float, seed: int = 0,
                     folds: int = 5, enabled: bool = True) -> BaselineReport:
    """Majority class and TF-IDF nearest neighbour against the intent head, out of fold (accuracy)."""
    if not enabled:
        return skipped_report("accuracy")
    start = time.perf_counter()
    splits = _folds(y, folds, seed)
    candidates = [_out_of_fold("majority class", _majority, texts, y, splits),
                  _out_of_fold("TF-IDF nearest neighbour", _tfidf_nn, texts, y, splits)]
    model = (oof_probs.argmax(axis=1) == y).astype(np.float64)
    return compare_with_baselines(metric="accuracy", candidates=candidates, model_validation=float(model.mean()),
                                  model_test=float(model.mean()), model_test_scores=model, fit_seconds=fit_seconds,
                                  hint=HINT, seed=seed, seconds=time.perf_counter() - start)

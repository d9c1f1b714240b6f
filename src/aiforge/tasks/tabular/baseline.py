"""The tabular baselines: majority class and the logistic-regression candidate (fitted if it was not a candidate).

Chosen on validation, scored on the same evaluation rows as the shipped model. When the model
itself is the logistic candidate, only the majority class is a baseline (a model is not its own
baseline).
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from aiforge.audit.baseline import (
    BaselineReport,
    BaselineResult,
    compare_with_baselines,
    majority_baseline,
    skipped_report,
)
from aiforge.tasks.tabular.models import TabularModel, fit_plain

__all__ = ["HINT", "tabular_baselines"]

HINT = ("check the features (a leak-free, informative column set matters more than the model), add data, or "
        "compare model.candidates; gradient boosting rarely loses to logistic regression by chance alone")


def _accuracy(model: TabularModel, X: pd.DataFrame, y: np.ndarray) -> np.ndarray:
    scores: np.ndarray = ((model.proba(X) > 0.5).astype(np.int64) == y).astype(np.float64)
    return scores


def tabular_baselines(*, fitted: Mapping[str, TabularModel], best: str, logistic: Pipeline, shipped: TabularModel,
                      X_train: pd.DataFrame, y_train: np.ndarray, X_val: pd.DataFrame, y_val: np.ndarray,
                      X_test: pd.DataFrame | None, y_test: np.ndarray | None, fit_seconds: float, seed: int,
                      enabled: bool = True) -> BaselineReport:
    """Majority class and logistic regression against the shipped model (accuracy, label = P > 0.5)."""
    if not enabled:
        return skipped_report("accuracy")
    start = time.perf_counter()
    candidates = [majority_baseline(y_train.tolist(), y_val.tolist(), y_test.tolist() if y_test is not None else None)]
    if best == "logistic":
        candidates.append(BaselineResult("logistic regression", "accuracy", None, None, 0.0, skipped=True,
                                         reason="the model is the logistic candidate"))
    else:
        t0 = time.perf_counter()
        lr = fitted.get("logistic") or fit_plain(logistic, X_train, y_train, "logistic")
        val = _accuracy(lr, X_val, y_val)
        test = _accuracy(lr, X_test, y_test) if X_test is not None and y_test is not None else None
        candidates.append(BaselineResult("logistic regression", "accuracy", float(val.mean()),
                                         float(test.mean()) if test is not None else None,
                                         time.perf_counter() - t0 + (lr.fit_seconds if "logistic" in fitted else 0),
                                         test_scores=test))
    model_val = float(_accuracy(shipped, X_val, y_val).mean())
    model_scores = _accuracy(shipped, X_test, y_test) if X_test is not None and y_test is not None else None
    return compare_with_baselines(metric="accuracy", candidates=candidates, model_validation=model_val,
                                  model_test=float(model_scores.mean()) if model_scores is not None else None,
                                  model_test_scores=model_scores, fit_seconds=fit_seconds, hint=HINT, seed=seed,
                                  seconds=time.perf_counter() - start)

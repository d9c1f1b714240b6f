"""scikit-learn pipelines for tabular classification and the three bias mitigations.

Every fitted model is a :class:`TabularModel`: something that gives the probability of the
positive class from the graph feed (a DataFrame of the graph's inputs) and knows how it is
exported. Labels are derandomized the same way everywhere: positive iff p > 0.5.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from aiforge.errors import DataError, SpecError

__all__ = ["MODEL_KINDS", "TabularModel", "make_pipeline", "mitigate", "reweighing_weights"]


MODEL_KINDS = ("logistic", "hist_gradient_boosting")


def make_preprocessor(kind: str, numeric: list[str], categorical: list[str]) -> ColumnTransformer:
    """Median imputation (+ scaling for linear models) of numbers; one-hot of categories, unknown ignored."""
    steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy="median", keep_empty_features=True))]
    if kind == "logistic":
        steps.append(("scale", StandardScaler()))
    parts: list[tuple[str, Any, list[str]]] = []
    if numeric:
        parts.append(("num", Pipeline(steps), numeric))
    if categorical:
        parts.append(("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), categorical))
    return ColumnTransformer(parts, remainder="drop")


def make_classifier(kind: str, *, seed: int, max_iter: int) -> Any:
    """An unfitted classifier of ``kind``."""
    if kind == "logistic":
        return LogisticRegression(max_iter=max(max_iter, 1000), C=1.0)
    if kind == "hist_gradient_boosting":
        return HistGradientBoostingClassifier(max_iter=max_iter, learning_rate=0.1, early_stopping=True,
                                              validation_fraction=0.1, n_iter_no_change=10, random_state=seed)
    raise SpecError(f"unknown model {kind!r}; known: {', '.join(MODEL_KINDS)}")


def make_pipeline(kind: str, numeric: list[str], categorical: list[str], *, seed: int, max_iter: int) -> Pipeline:
    """Preprocessing and classifier as one scikit-learn pipeline (exported whole to ONNX)."""
    return Pipeline([("pre", make_preprocessor(kind, numeric, categorical)),
                     ("clf", make_classifier(kind, seed=seed, max_iter=max_iter))])


@dataclass
class TabularModel:
    """A fitted model: ``method`` says which mitigation produced it and so how it exports.

    - ``none`` / ``reweighing``: ``pipeline`` (one scikit-learn pipeline).
    - ``exponentiated_gradient``: ``members`` (pipelines) with ``weights``; p = Σ wᵢ·labelᵢ.
    - ``threshold_optimizer``: ``pipeline`` gives scores; ``thresholds`` maps each group of
      ``sensitive_feature`` to fairlearn's interpolation (p0, op0, t0, p1, op1, t1, p_ignore, constant).
    """

    kind: str
    method: str
    pipeline: Pipeline | None = None
    members: list[Pipeline] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    thresholds: dict[str, dict[str, float]] = field(default_factory=dict)
    sensitive_feature: str | None = None
    constraint: str | None = None
    fit_seconds: float = 0.0

    def proba(self, X: pd.DataFrame) -> np.ndarray:
        """Probability of the positive class for each row of the graph feed ``X``."""
        if self.method in ("none", "reweighing"):
            assert self.pipeline is not None
            return np.asarray(self.pipeline.predict_proba(X)[:, 1], dtype=np.float64)
        if self.method == "exponentiated_gradient":
            return np.asarray(sum(w * m.predict(X) for w, m in zip(self.weights, self.members, strict=True)),
                              dtype=np.float64)
        assert self.pipeline is not None and self.sensitive_feature is not None
        scores = self.pipeline.predict_proba(X)[:, 1]
        groups = X[self.sensitive_feature].astype(str).to_numpy()
        out = np.zeros(len(X))
        for g, t in self.thresholds.items():
            mask = groups == g
            s = scores[mask]
            p = t["p0"] * _op(s, t["op0"], t["t0"]) + t["p1"] * _op(s, t["op1"], t["t1"])
            out[mask] = t["p_ignore"] * t["constant"] + (1 - t["p_ignore"]) * p
        return out

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """0/1 labels: positive iff the probability is above 0.5 (the served rule)."""
        return (self.proba(X) > 0.5).astype(np.int64)


def _op(s: np.ndarray, op: float, t: float) -> np.ndarray:
    return (s > t).astype(float) if op > 0 else (s < t).astype(float)


def reweighing_weights(y: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Kamiran & Calders reweighing: w(a, y) = P(a)·P(y) / P(a, y), so group and label look independent."""
    w = np.ones(len(y))
    for a in np.unique(groups):
        for k in (0, 1):
            mask = (groups == a) & (y == k)
            if mask.any():
                w[mask] = (np.mean(groups == a) * np.mean(y == k)) / np.mean(mask)
    return w


def fit_plain(pipe: Pipeline, X: pd.DataFrame, y: np.ndarray, kind: str,
              sample_weight: np.ndarray | None = None) -> TabularModel:
    start = time.perf_counter()
    if sample_weight is None:
        pipe.fit(X, y)
    else:
        pipe.fit(X, y, clf__sample_weight=sample_weight)
    method = "none" if sample_weight is None else "reweighing"
    return TabularModel(kind=kind, method=method, pipeline=pipe, fit_seconds=time.perf_counter() - start)


def mitigate(method: str, *, base: TabularModel, template: Pipeline, X: pd.DataFrame, y: np.ndarray,
             groups: np.ndarray, X_val: pd.DataFrame, y_val: np.ndarray, groups_val: np.ndarray,
             sensitive_feature: str, constraint: str, eps: float, max_iter: int, seed: int,
             tolerance: float | None = None) -> TabularModel:
    """Fit the mitigated model ``method`` of the same kind as ``base``.

    ThresholdOptimizer post-processes ``base`` and is fitted on the validation rows (scores on
    training rows are optimistic); the other two refit on the training rows.
    """
    try:
        model = _mitigate(method, base, template, X, y, groups, X_val, y_val, groups_val, sensitive_feature,
                          constraint, eps, max_iter, seed, tolerance)
    except ValueError as exc:
        raise DataError(f"mitigation {method} for {sensitive_feature!r} failed: {str(exc).splitlines()[0]} "
                        "Every group needs both labels in the rows it is fitted on (validation rows for "
                        "threshold_optimizer); choose another sensitive feature or method, or collect more "
                        "data for that group.") from exc
    model.sensitive_feature, model.constraint = sensitive_feature, constraint
    return model


def _mitigate(method: str, base: TabularModel, template: Pipeline, X: pd.DataFrame, y: np.ndarray,
              groups: np.ndarray, X_val: pd.DataFrame, y_val: np.ndarray, groups_val: np.ndarray,
              sensitive_feature: str, constraint: str, eps: float, max_iter: int, seed: int,
              tolerance: float | None) -> TabularModel:
    start = time.perf_counter()
    if method == "reweighing":
        model = fit_plain(clone(template), X, y, base.kind, reweighing_weights(y, groups))
    elif method == "exponentiated_gradient":
        model = _exponentiated_gradient(base, template, X, y, groups, constraint, eps, max_iter, seed)
    elif method == "threshold_optimizer":
        model = _threshold_optimizer(base, X_val, y_val, groups_val, sensitive_feature, constraint, tolerance)
    else:
        raise SpecError(f"unknown mitigation {method!r}")
    model.fit_seconds = time.perf_counter() - start
    return model


def _moment(constraint: str, eps: float) -> Any:
    from fairlearn.reductions import DemographicParity, EqualizedOdds

    return DemographicParity(difference_bound=eps) if constraint == "demographic_parity" \
        else EqualizedOdds(difference_bound=eps)


def _exponentiated_gradient(base: TabularModel, template: Pipeline, X: pd.DataFrame, y: np.ndarray,
                            groups: np.ndarray, constraint: str, eps: float, max_iter: int,
                            seed: int) -> TabularModel:
    from fairlearn.reductions import ExponentiatedGradient

    # preprocess once; the reduction refits only the classifier (Pipeline.fit takes no sample_weight)
    pre = clone(template.named_steps["pre"]).fit(X, y)
    Z = pre.transform(X)
    eg = ExponentiatedGradient(clone(template.named_steps["clf"]), constraints=_moment(constraint, eps),
                               eps=eps, max_iter=max_iter)
    with warnings.catch_warnings():  # fairlearn 0.15 grows Series with .at (pandas 3 deprecates it)
        warnings.filterwarnings("ignore", message="Setting a")
        eg.fit(Z, y, sensitive_features=groups)
    members, weights = [], []
    for clf, w in zip(eg.predictors_, eg.weights_, strict=True):
        if w > 1e-9:
            members.append(Pipeline([("pre", pre), ("clf", clf)]))
            weights.append(float(w))
    total = sum(weights)
    return TabularModel(kind=base.kind, method="exponentiated_gradient", members=members,
                        weights=[w / total for w in weights])


def _threshold_optimizer(base: TabularModel, X_val: pd.DataFrame, y_val: np.ndarray, groups_val: np.ndarray,
                         sensitive_feature: str, constraint: str, tolerance: float | None) -> TabularModel:
    from fairlearn.postprocessing import ThresholdOptimizer

    to = ThresholdOptimizer(estimator=base.pipeline, constraints=constraint, objective="accuracy_score",
                            prefit=True, predict_method="predict_proba", tol=tolerance)
    to.fit(X_val, y_val, sensitive_features=groups_val)
    thresholds: dict[str, dict[str, float]] = {}
    for g, it in to.interpolated_thresholder_.interpolation_dict.items():
        thresholds[str(g)] = {
            "p0": float(it.p0), "op0": 1.0 if it.operation0.operator == ">" else -1.0,
            "t0": float(it.operation0.threshold),
            "p1": float(it.p1), "op1": 1.0 if it.operation1.operator == ">" else -1.0,
            "t1": float(it.operation1.threshold),
            "p_ignore": float(it.get("p_ignore", 0.0)), "constant": float(it.get("prediction_constant", 0.0)),
        }
    return TabularModel(kind=base.kind, method="threshold_optimizer", pipeline=base.pipeline, thresholds=thresholds)

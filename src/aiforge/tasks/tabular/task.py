"""Tabular classification: scikit-learn pipelines chosen by validation score, bias mitigation,
export to one ONNX graph, and a fairness audit run on that exported graph."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from aiforge.audit.fairness import AuditSettings
from aiforge.bundle.parts import BundleParts, ExportResult, export_bundle
from aiforge.bundle.registry import Registry
from aiforge.data.splits import stratified_split
from aiforge.errors import DataError, SpecError
from aiforge.spec import BaseSpec
from aiforge.tables import baseline_summary
from aiforge.tasks.base import check_spec
from aiforge.tasks.tabular.audit import audit_graph, settings_from, write_audit
from aiforge.tasks.tabular.baseline import tabular_baselines
from aiforge.tasks.tabular.card import tabular_card
from aiforge.tasks.tabular.choose import choose_mitigation, score_predictions
from aiforge.tasks.tabular.data import (
    TabularFrame,
    build_schema,
    columns_frame,
    frame_columns,
    load_tabular,
)
from aiforge.tasks.tabular.export import export_tabular
from aiforge.tasks.tabular.fitted import TabularFitResult
from aiforge.tasks.tabular.models import TabularModel, fit_plain, make_pipeline, mitigate
from aiforge.tasks.tabular.schema import TabularSchema
from aiforge.tasks.tabular.spec import TabularSpec

if TYPE_CHECKING:
    from rich.console import RenderableType

__all__ = ["TabularTask", "model_frame"]


def model_frame(frame: TabularFrame, schema: TabularSchema, sensitive: list[str]) -> pd.DataFrame:
    """The DataFrame scikit-learn sees: graph inputs, plus sensitive columns (ignored by the pipeline)."""
    X = columns_frame(frame_columns(frame.frame, schema), schema)
    for c in sensitive:
        if c not in X.columns:
            X[c] = frame.sensitive[c].to_numpy()
    return X


def _validation_score(method: str, model: TabularModel, fit_one: Callable[..., TabularModel], X_val: pd.DataFrame,
                      y_val: np.ndarray, groups_val: np.ndarray, feature: str | None, settings: AuditSettings, *,
                      seed: int) -> dict[str, Any]:
    """A setting's validation scores; ThresholdOptimizer's out of fold (it is fitted on validation rows).

    The threshold optimizer is cross-fitted: fitted on one half of the validation rows (stratified
    by label and group) and scored on the other, both ways, so its score is not in-sample.
    """
    if method != "threshold_optimizer":
        return score_predictions(y_val, model.proba(X_val), groups_val if feature else None, feature, settings)
    strata = [f"{a}|{b}" for a, b in zip(y_val.tolist(), groups_val.tolist(), strict=True)]
    a_idx, b_idx = stratified_split(strata, fraction=0.5, seed=seed)
    p = np.zeros(len(y_val))
    note = "cross-fitted on two halves of the validation rows"
    try:
        for fit_on, score_on in ((a_idx, b_idx), (b_idx, a_idx)):
            half = fit_one(method, X_val=X_val.iloc[fit_on], y_val=y_val[fit_on], groups_val=groups_val[fit_on])
            p[score_on] = half.proba(X_val.iloc[score_on])
    except DataError:  # a half lacks a label in some group: fall back to the in-sample score, and say so
        p, note = model.proba(X_val), "in-sample on validation (a half of it lacked a label in some group)"
    return {**score_predictions(y_val, p, groups_val, feature, settings), "note": note}


class TabularTask:
    """Fit, mitigate, export and audit a tabular binary classifier."""

    name = "tabular-classification"

    def fit(self, spec: BaseSpec, *, progress: bool = True) -> TabularFitResult:
        """Load data, pick the best model and mitigation on validation, then score every setting on test.

        Raises:
            DataError: a data check failed.
            SpecError: a mitigation needs a sensitive feature and none is declared.
        """
        from sklearn.base import clone

        spec = check_spec(spec, TabularSpec)
        start = time.perf_counter()
        data = load_tabular(spec, seed=spec.model.seed)
        mit = spec.audit.mitigation
        methods = mit.methods
        feature = mit.sensitive_feature or (data.sensitive_features[0] if data.sensitive_features else None)
        if methods and feature is None:
            raise SpecError(f"{spec.source or 'spec'}: audit.mitigation needs data.sensitive_features.")
        if feature is not None and feature not in data.sensitive_features:
            raise SpecError(f"audit.mitigation.sensitive_feature {feature!r} is not one of the data's sensitive "
                            f"features {data.sensitive_features}.")
        base_schema = build_schema(data, spec, sensitive_at_prediction=None)
        sens = data.sensitive_features
        X_tr, X_val = (model_frame(f, base_schema, sens) for f in (data.train, data.validation))
        numeric = [*data.numeric, *(d.name for d in spec.features.derived)]
        templates: dict[str, Any] = {
            k: make_pipeline(k, numeric, data.categorical, seed=spec.model.seed, max_iter=spec.model.max_iter)
            for k in spec.model.candidates}
        selection: dict[str, float] = {}
        fitted: dict[str, TabularModel] = {}
        for kind, template in templates.items():
            fitted[kind] = fit_plain(clone(template), X_tr, data.train.y, kind)
            selection[kind] = _score(spec.model.select_by, fitted[kind], X_val, data.validation.y)
        best = max(selection, key=lambda k: selection[k])
        base = fitted[best]
        models = {"none": base}
        groups = data.train.sensitive[feature].to_numpy() if feature else np.array([])
        groups_val = data.validation.sensitive[feature].to_numpy() if feature else groups
        fit_one = partial(mitigate, base=base, template=templates[best], X=X_tr, y=data.train.y, groups=groups,
                          sensitive_feature=str(feature), constraint=mit.constraint, eps=mit.eps,
                          max_iter=mit.max_iter, seed=spec.model.seed, tolerance=mit.tolerance)
        for m in methods:
            models[m] = fit_one(m, X_val=X_val, y_val=data.validation.y, groups_val=groups_val)
        settings = settings_from(spec.audit, seed=spec.model.seed)
        validation = {m: _validation_score(m, model, fit_one, X_val, data.validation.y, groups_val, feature,
                                           settings, seed=spec.model.seed) for m, model in models.items()}
        choice = choose_mitigation(validation, candidates=methods, target=mit.targeted,
                                   max_accuracy_loss=mit.max_accuracy_loss, max_side_effect=mit.max_side_effect,
                                   pick=mit.pick)
        schema = build_schema(data, spec, sensitive_at_prediction=feature if choice.chosen == "threshold_optimizer"
                              else None)
        X_ev = model_frame(data.test, base_schema, sens)
        g_ev = data.test.sensitive[feature].to_numpy() if feature else None
        evaluation = {m: {**score_predictions(data.test.y, model.proba(X_ev), g_ev, feature, settings),
                          "fit_seconds": model.fit_seconds}
                      for m, model in models.items()}
        train_seconds = time.perf_counter() - start
        baseline = tabular_baselines(
            fitted=fitted, best=best, logistic=clone(templates["logistic"]) if "logistic" in templates else
            make_pipeline("logistic", numeric, data.categorical, seed=spec.model.seed, max_iter=spec.model.max_iter),
            shipped=models[choice.chosen], X_train=X_tr, y_train=data.train.y, X_val=X_val, y_val=data.validation.y,
            X_test=X_ev, y_test=data.test.y, fit_seconds=train_seconds, seed=spec.model.seed, enabled=spec.baseline)
        return TabularFitResult(data=data, schema=schema, base=base, shipped=models[choice.chosen],
                                selection=selection, evaluation=evaluation, eval_split=data.test_split,
                                models=models, train_seconds=train_seconds, choice=choice, baseline=baseline)

    def export(self, spec: BaseSpec, result: TabularFitResult, registry: Registry) -> ExportResult:
        """Export the shipped model to ONNX, check parity, audit the exported graph, write report and card.

        Raises:
            ExportError: the model cannot be exported or the ONNX graph disagrees with scikit-learn.
        """
        spec = check_spec(spec, TabularSpec)
        return export_bundle(registry, spec, partial(_write_bundle, spec=spec, result=result))

    def summarize(self, result: TabularFitResult, exported: ExportResult) -> list[RenderableType]:
        """Trade-off table (each setting on the held-out test split), the mitigation choice, the parity line."""
        from rich.table import Table

        feature = result.shipped.sensitive_feature or next(iter(result.data.sensitive_features), None)
        table = Table(title=f"{exported.record.name}: {result.base.kind} (validation {result.selection}) "
                            f"on {result.eval_split}, sensitive feature {feature}")
        for col in ("setting", "accuracy", "ROC AUC", "DP difference", "EO difference", "fit s"):
            table.add_column(col, justify="left" if col == "setting" else "right", no_wrap=col == "setting")
        for m, v in result.evaluation.items():
            mark = " (shipped)" if m == result.shipped.method else ""
            table.add_row(m + mark, f"{v['accuracy']:.4f}", f"{v['roc_auc']:.4f}",
                          f"{v.get('demographic_parity_difference', float('nan')):.4f}",
                          f"{v.get('equalized_odds_difference', float('nan')):.4f}", f"{v['fit_seconds']:.1f}")
        p = exported.parity
        why = result.choice.reason if result.choice else ""
        line = (f"{why}\nONNX vs scikit-learn on {p.samples} rows: max |Δp| = {p.max_abs_diff:.2e}, "
                f"label agreement {p.details['label_agreement']:.4%}; audit and report (report.html) from the "
                "ONNX graph")
        return [table, *baseline_summary(result.baseline), line]


def _write_bundle(staged: Path, *, spec: TabularSpec, result: TabularFitResult) -> BundleParts:
    """The graph (parity-checked), its audit and report, pipeline, metrics and card (``export_bundle``'s writer)."""

    data, schema, model = result.data, result.schema, result.shipped
    eval_frame = data.test
    feed = frame_columns(eval_frame.frame, schema)
    reference = model.proba(model_frame(eval_frame, schema, data.sensitive_features))
    parity = export_tabular(model, schema, staged, feed=feed, reference=reference)
    pipeline = _pipeline_json(spec, result)
    audit = audit_graph(staged / "model.onnx", feed, eval_frame, spec.audit, labels=data.labels)
    choice = result.choice
    tradeoff = [{"setting": m, **v, "shipped": m == model.method,
                 "validation": choice.validation.get(m) if choice else None,
                 "verdict": choice.verdicts.get(m, "") if choice else ""} for m, v in result.evaluation.items()]
    metrics = {"split": result.eval_split, "rows": len(eval_frame), "rows_per_group": data.rows_per_group(eval_frame),
               **audit.metrics, "selection": result.selection,
               "candidates": spec.model.candidates, "model": model.kind, "mitigation": model.method,
               "mitigation_choice": ({k: v for k, v in choice.to_dict().items() if k != "validation"}
                                     if choice else None),
               "tradeoff": tradeoff, "train_seconds": result.train_seconds,
               "sklearn_accuracy": result.evaluation[model.method]["accuracy"]}
    write_audit(staged, audit, title=f"{spec.name}: fairness audit of the exported ONNX model", tradeoff=tradeoff,
                baseline=result.baseline)
    card = tabular_card(spec=spec, result=result, audit=audit.report, parity=parity.to_dict(), metrics=metrics)
    extra = {"model": model.kind, "mitigation": pipeline["mitigation"], "columns": {"label": data.label},
             "data": data.provenance}
    return BundleParts(pipeline=pipeline, metrics=metrics, card=card, parity=parity,
                       headline=_headline(audit.report, data.sensitive_features), extra=extra,
                       baseline=result.baseline)


def _score(metric: str, model: TabularModel, X: pd.DataFrame, y: np.ndarray) -> float:
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    p = model.proba(X)
    if metric == "roc_auc":
        return float(roc_auc_score(y, p))
    pred = (p > 0.5).astype(np.int64)
    return float(balanced_accuracy_score(y, pred)) if metric == "balanced_accuracy" else float(np.mean(pred == y))


def _headline(report: dict[str, Any], sensitive: list[str]) -> dict[str, float]:
    o = report["overall"]
    out = {"accuracy": o["accuracy"], "roc_auc": o["roc_auc"]}
    for f in sensitive:
        feat = report["features"].get(f, {})
        if "demographic_parity_difference" in feat:
            out[f"dp_difference_{f}"] = feat["demographic_parity_difference"]
            out[f"eo_difference_{f}"] = feat["equalized_odds_difference"]
    return out


def _pipeline_json(spec: TabularSpec, result: TabularFitResult) -> dict[str, Any]:
    data, model = result.data, result.shipped
    example_row = data.full_train.frame.iloc[0]
    example: dict[str, Any] = {}
    for c in result.schema.columns:
        v = example_row.get(c.name)
        if c.kind == "numeric":
            example[c.name] = None if pd.isna(v) else float(v)
        else:
            example[c.name] = None if pd.isna(v) else str(v)
    mitigation: dict[str, Any] = {
        "method": model.method, "constraint": model.constraint, "sensitive_feature": model.sensitive_feature,
        "needs_sensitive_feature_at_prediction": model.method == "threshold_optimizer"}
    if model.method == "exponentiated_gradient":
        mitigation["mixture_weights"] = model.weights
    if model.method == "threshold_optimizer":
        mitigation["thresholds"] = model.thresholds
    return {"task": "tabular-classification", "graph": "model.onnx", "labels": data.labels,
            "positive_label": data.labels[1], "label_column": data.label,
            "sensitive_features": data.sensitive_features, "schema": result.schema.to_dict(),
            "model": model.kind, "mitigation": mitigation, "example": example,
            "decision": "label = positive iff P(positive) > 0.5 (randomized mitigations derandomized)"}

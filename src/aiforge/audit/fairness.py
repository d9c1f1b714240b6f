"""Per-group fairness audit with fairlearn's MetricFrame, bootstrap intervals and small-group flags.

For each sensitive feature (and their intersection) the audit reports, per group: count,
selection rate, accuracy, TPR, FPR and precision; the between-group differences and ratios;
demographic parity difference and ratio, equalized odds difference, and the four-fifths rule
(each group's selection rate over the largest group's, flagged outside [0.8, 1.25]).

Groups with fewer than ``min_group_size`` rows are listed as too small to judge and left out of
the gaps (never merged into another group); release gates on a feature with such a group are
undecided. The headline gaps (and the DP ratio), overall accuracy and ROC AUC get percentile
bootstrap intervals; each group's rates (selection rate, accuracy, TPR, FPR) get Wilson intervals.

Multi-class classifiers (text, image) have no positive class to select, so
:func:`audit_accuracy_by_group` reports their per-group accuracy, macro-F1, TPR (macro recall) and
FPR (macro one-vs-rest) and the gaps between the judged groups, with the same small-group rule,
bootstrap intervals (the gaps, and each judged group's macro-F1/TPR/FPR) and Wilson intervals
(each group's accuracy).

Both write the same top-level schema: ``schema``, ``overall`` (with ``intervals``), ``settings``
and ``features`` (name -> ``groups``, ``judged_groups``, ``small_groups``, gaps, ``intervals``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from aiforge.audit.metrics import classification_metrics, macro_f1, metric_intervals, wilson

__all__ = ["AUDIT_SCHEMA", "AuditSettings", "audit_accuracy_by_group", "audit_predictions", "bootstrap_overall",
           "classifier_audit", "wilson"]

AUDIT_SCHEMA = "aiforge.audit/2"

METRICS = ("count", "selection_rate", "accuracy", "tpr", "fpr", "precision")


@dataclass(frozen=True)
class AuditSettings:
    """How the audit judges groups and how many bootstrap resamples it draws."""

    min_group_size: int = 30
    bootstrap: int = 200
    confidence: float = 0.95
    intersections: bool = True
    seed: int = 0


def _percentiles(values: np.ndarray, confidence: float) -> list[float]:
    finite = values[np.isfinite(values)]
    if not len(finite):
        return [float("nan"), float("nan")]
    lo, hi = (1 - confidence) / 2 * 100, (1 + confidence) / 2 * 100
    return [float(np.percentile(finite, lo)), float(np.percentile(finite, hi))]


def bootstrap_overall(y: np.ndarray, pred: np.ndarray, score: np.ndarray | None,
                      s: AuditSettings) -> dict[str, list[float]]:
    """Percentile bootstrap intervals of overall accuracy (and ROC AUC when ``score`` is given)."""
    if s.bootstrap == 0 or not len(y):
        return {}
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(s.seed)
    acc, auc = np.zeros(s.bootstrap), np.full(s.bootstrap, np.nan)
    for b in range(s.bootstrap):
        idx = rng.integers(0, len(y), len(y))
        acc[b] = np.mean(pred[idx] == y[idx])
        if score is not None and 0 < y[idx].sum() < len(idx):
            auc[b] = roc_auc_score(y[idx], score[idx])
    out = {"accuracy": _percentiles(acc, s.confidence)}
    if score is not None:
        out["roc_auc"] = _percentiles(auc, s.confidence)
    return out


def _metric_fns() -> dict[str, Any]:
    from fairlearn.metrics import count, false_positive_rate, selection_rate, true_positive_rate
    from sklearn.metrics import accuracy_score, precision_score

    def precision(y_true: Any, y_pred: Any) -> float:
        return float(precision_score(y_true, y_pred, zero_division=0))

    return {"count": count, "selection_rate": selection_rate, "accuracy": accuracy_score,
            "tpr": true_positive_rate, "fpr": false_positive_rate, "precision": precision}


def _overall(y: np.ndarray, pred: np.ndarray, score: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    tp, fp = int(np.sum((pred == 1) & (y == 1))), int(np.sum((pred == 1) & (y == 0)))
    pos, neg = int(np.sum(y == 1)), int(np.sum(y == 0))
    return {"n": len(y), "accuracy": float(np.mean(pred == y)), "selection_rate": float(np.mean(pred)),
            "tpr": tp / pos if pos else 0.0, "fpr": fp / neg if neg else 0.0,
            "precision": tp / (tp + fp) if tp + fp else 0.0,
            "roc_auc": float(roc_auc_score(y, score)) if 0 < pos < len(y) else float("nan"),
            "base_rate": float(np.mean(y))}


def audit_predictions(y_true: np.ndarray, y_pred: np.ndarray, y_score: np.ndarray, sensitive: pd.DataFrame,
                      settings: AuditSettings = AuditSettings()) -> dict[str, Any]:
    """The audit of 0/1 predictions, as a JSON-ready dict (see the module docstring)."""
    y, pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    overall: dict[str, Any] = _overall(y, pred, np.asarray(y_score))
    overall["intervals"] = bootstrap_overall(y, pred, np.asarray(y_score, dtype=np.float64), settings)
    report: dict[str, Any] = {"schema": AUDIT_SCHEMA, "task": "binary", "overall": overall,
                              "settings": settings.__dict__, "features": {}}
    columns = {c: sensitive[c].astype(str).to_numpy() for c in sensitive.columns}
    if settings.intersections and len(columns) > 1:
        joined = pd.Series([" & ".join(v) for v in zip(*columns.values(), strict=True)])
        columns[" & ".join(columns)] = joined.to_numpy()
    for name, groups in columns.items():
        report["features"][name] = _audit_feature(y, pred, groups, settings)
    return report


def _audit_feature(y: np.ndarray, pred: np.ndarray, groups: np.ndarray, s: AuditSettings) -> dict[str, Any]:
    from fairlearn.metrics import MetricFrame

    mf = MetricFrame(metrics=_metric_fns(), y_true=y, y_pred=pred, sensitive_features=pd.Series(groups, name="g"))
    table = mf.by_group
    rows: dict[str, dict[str, Any]] = {str(g): {m: float(table.loc[g, m]) for m in METRICS} for g in table.index}
    small = sorted(g for g, r in rows.items() if r["count"] < s.min_group_size)
    judged = [g for g in rows if g not in small]
    for g, r in rows.items():
        r["too_small"] = g in small
        mask = groups == g
        pos, neg = float(np.sum(y[mask] == 1)), float(np.sum(y[mask] == 0))
        r["intervals"] = {"selection_rate": wilson(float(pred[mask].sum()), float(mask.sum()), s.confidence),
                          "accuracy": wilson(float(np.sum(pred[mask] == y[mask])), float(mask.sum()), s.confidence),
                          "tpr": wilson(float(np.sum((pred == 1) & (y == 1) & mask)), pos, s.confidence),
                          "fpr": wilson(float(np.sum((pred == 1) & (y == 0) & mask)), neg, s.confidence)}
    out: dict[str, Any] = {"groups": rows, "small_groups": small, "judged_groups": judged,
                           "min_group_size": s.min_group_size}
    if len(judged) < 2:
        out["note"] = f"fewer than two groups with at least {s.min_group_size} rows: gaps not judged"
        return out
    jt = table.loc[[g for g in table.index if str(g) in judged]]
    out["difference"] = {m: float(jt[m].max() - jt[m].min()) for m in METRICS if m != "count"}
    out["ratio"] = {m: _ratio(jt[m]) for m in METRICS if m != "count"}
    sr = jt["selection_rate"]
    out["demographic_parity_difference"] = out["difference"]["selection_rate"]
    out["demographic_parity_ratio"] = out["ratio"]["selection_rate"]
    out["equalized_odds_difference"] = max(out["difference"]["tpr"], out["difference"]["fpr"])
    reference = str(jt["count"].idxmax())
    ref_rate = float(sr.loc[jt["count"].idxmax()])
    ratios = {str(g): (float(v) / ref_rate if ref_rate > 0 else float("nan")) for g, v in sr.items()}
    flagged = sorted(g for g, r in ratios.items() if not (0.8 <= r <= 1.25))
    out["four_fifths"] = {"reference_group": reference, "ratios": ratios, "flagged_groups": flagged,
                          "min_max_ratio": out["demographic_parity_ratio"],
                          "passes": not flagged and out["demographic_parity_ratio"] >= 0.8}
    out["intervals"] = _bootstrap(y, pred, groups, judged, s)
    return out


def _ratio(values: pd.Series) -> float:
    hi = float(values.max())
    return float(values.min()) / hi if hi > 0 else float("nan")


def _bootstrap(y: np.ndarray, pred: np.ndarray, groups: np.ndarray, judged: list[str],
               s: AuditSettings) -> dict[str, Any]:
    """Percentile intervals of the DP difference, EO difference and accuracy gap over resampled rows."""
    if s.bootstrap == 0:
        return {}
    keep = np.isin(groups, judged)
    y, pred, groups = y[keep], pred[keep], groups[keep]
    codes = np.unique(groups, return_inverse=True)[1]
    k, n = len(judged), len(y)
    rng = np.random.default_rng(s.seed)
    stats = np.zeros((s.bootstrap, 4))
    for b in range(s.bootstrap):
        idx = rng.integers(0, n, n)
        c, yb, pb = codes[idx], y[idx], pred[idx]
        cnt = np.bincount(c, minlength=k).astype(float)
        pos = np.bincount(c, weights=yb, minlength=k)
        neg = cnt - pos
        sel = np.bincount(c, weights=pb, minlength=k) / np.maximum(cnt, 1)
        tpr = np.bincount(c, weights=pb * yb, minlength=k) / np.maximum(pos, 1)
        fpr = np.bincount(c, weights=pb * (1 - yb), minlength=k) / np.maximum(neg, 1)
        acc = np.bincount(c, weights=(pb == yb).astype(float), minlength=k) / np.maximum(cnt, 1)
        present = cnt > 0
        ratio = sel[present].min() / sel[present].max() if sel[present].max() > 0 else np.nan
        stats[b] = [np.ptp(sel[present]), max(np.ptp(tpr[pos > 0]) if (pos > 0).any() else 0.0,
                                              np.ptp(fpr[neg > 0]) if (neg > 0).any() else 0.0),
                    np.ptp(acc[present]), ratio]
    names = ("demographic_parity_difference", "equalized_odds_difference", "accuracy_difference",
             "demographic_parity_ratio")
    return {name: _percentiles(stats[:, j], s.confidence)
            for j, name in enumerate(names)} | {"resamples": s.bootstrap, "confidence": s.confidence}


def _class_rates(y: np.ndarray, pred: np.ndarray, classes: np.ndarray) -> tuple[float, float]:
    """Macro TPR (recall) over the classes present in ``y`` and macro one-vs-rest FPR over ``classes``."""
    tprs, fprs = [], []
    for k in classes:
        actual, other = y == k, y != k
        if actual.any():
            tprs.append(float(np.mean(pred[actual] == k)))
        if other.any():
            fprs.append(float(np.mean(pred[other] == k)))
    return (float(np.mean(tprs)) if tprs else 0.0), (float(np.mean(fprs)) if fprs else 0.0)


GROUP_METRICS = ("accuracy", "macro_f1", "tpr", "fpr")


def audit_accuracy_by_group(y_true: np.ndarray, y_pred: np.ndarray, sensitive: pd.DataFrame,
                            settings: AuditSettings = AuditSettings()) -> dict[str, Any]:
    """Per-group accuracy, macro-F1, TPR and FPR of a multi-class classifier (integer class ids), JSON-ready.

    For each column of ``sensitive``: every group's count and metrics (accuracy with a Wilson
    interval), which groups are too small to judge, and over the judged ones each metric's
    difference (largest minus smallest) with a bootstrap interval, the accuracy ratio and the
    worst group.
    """

    y, pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    correct = (y == pred).astype(np.float64)
    classes = np.unique(np.concatenate([y, pred])) if len(y) else np.array([], dtype=np.int64)
    tpr, fpr = _class_rates(y, pred, classes)
    overall: dict[str, Any] = {"n": len(y), "accuracy": float(correct.mean()) if len(y) else 0.0,
                               "macro_f1": macro_f1(y, pred), "tpr": tpr, "fpr": fpr}
    overall["intervals"] = bootstrap_overall(y, pred, None, settings)
    report: dict[str, Any] = {"schema": AUDIT_SCHEMA, "task": "multiclass", "overall": overall,
                              "settings": settings.__dict__, "features": {}}
    for name in sensitive.columns:
        groups = sensitive[name].astype(str).to_numpy()
        rows: dict[str, dict[str, Any]] = {}
        for g in sorted(set(groups.tolist())):
            mask = groups == g
            g_tpr, g_fpr = _class_rates(y[mask], pred[mask], classes)
            rows[g] = {"count": int(mask.sum()), "accuracy": float(correct[mask].mean()),
                       "macro_f1": macro_f1(y[mask], pred[mask]), "tpr": g_tpr, "fpr": g_fpr,
                       "too_small": bool(mask.sum() < settings.min_group_size),
                       "intervals": {"accuracy": wilson(float(correct[mask].sum()), float(mask.sum()),
                                                        settings.confidence)}}
        judged = [g for g, r in rows.items() if not r["too_small"]]
        feat: dict[str, Any] = {"groups": rows, "judged_groups": judged,
                                "small_groups": [g for g in rows if g not in judged],
                                "min_group_size": settings.min_group_size}
        if len(judged) < 2:
            feat["note"] = f"fewer than two groups with at least {settings.min_group_size} rows: gaps not judged"
        else:
            for metric in GROUP_METRICS:
                values = [rows[g][metric] for g in judged]
                feat[f"{metric}_difference"] = max(values) - min(values)
            acc = {g: rows[g]["accuracy"] for g in judged}
            hi = max(acc.values())
            feat["accuracy_ratio"] = min(acc.values()) / hi if hi > 0 else float("nan")
            feat["worst_group"] = min(acc, key=lambda g: acc[g])
            feat["intervals"] = _bootstrap_groups(y, pred, groups, judged, classes, settings)
            for g, per in feat["intervals"].pop("groups", {}).items():
                rows[g]["intervals"].update(per)
        report["features"][str(name)] = feat
    return report


def _bootstrap_groups(y: np.ndarray, pred: np.ndarray, groups: np.ndarray, judged: list[str], classes: np.ndarray,
                      s: AuditSettings) -> dict[str, Any]:
    """Percentile intervals of the per-group metric differences between judged groups over resampled rows."""
    if s.bootstrap == 0:
        return {}
    keep = np.isin(groups, judged)
    yk, pk, gk = y[keep], pred[keep], groups[keep]
    n = len(yk)
    rng = np.random.default_rng(s.seed)
    gaps = np.zeros((s.bootstrap, len(GROUP_METRICS)))
    each = np.full((s.bootstrap, len(judged), len(GROUP_METRICS)), np.nan)
    for b in range(s.bootstrap):
        idx = rng.integers(0, n, n)
        yb, pb, gb = yk[idx], pk[idx], gk[idx]
        for j, g in enumerate(judged):
            mask = gb == g
            if not mask.any():
                continue
            t, f = _class_rates(yb[mask], pb[mask], classes)
            each[b, j] = [float(np.mean(yb[mask] == pb[mask])), macro_f1(yb[mask], pb[mask]), t, f]
        arr = each[b][~np.isnan(each[b, :, 0])]
        gaps[b] = arr.max(axis=0) - arr.min(axis=0)
    # each judged group's macro-F1, TPR and FPR intervals (its accuracy has a Wilson interval)
    per_group = {g: {m: _percentiles(each[:, j, k], s.confidence) for k, m in enumerate(GROUP_METRICS) if k}
                 for j, g in enumerate(judged)}
    return {f"{m}_difference": _percentiles(gaps[:, j], s.confidence) for j, m in enumerate(GROUP_METRICS)} | {
        "resamples": s.bootstrap, "confidence": s.confidence, "groups": per_group}


def classifier_audit(truth: list[str], probabilities: np.ndarray, labels: list[str], groups: pd.DataFrame,
                     settings: AuditSettings = AuditSettings(), *, source: str = "") -> dict[str, Any]:
    """The audit.json body of a multi-class classifier (text, image): the schema :func:`audit_predictions` writes.

    ``overall`` holds the classifier metrics (per class, confusion) with intervals (bootstrap for
    accuracy and macro-F1, Wilson for top-5) and macro TPR/FPR; ``features`` the per-group report
    of :func:`audit_accuracy_by_group` for each column of ``groups`` (may have none).
    """
    metrics = classification_metrics(truth, probabilities, labels)
    index = {y: i for i, y in enumerate(labels)}
    report = audit_accuracy_by_group(np.array([index[y] for y in truth], dtype=np.int64),
                                     probabilities.argmax(axis=1), groups, settings)
    overall = {**metrics.to_dict(), "tpr": report["overall"]["tpr"], "fpr": report["overall"]["fpr"],
               "intervals": metric_intervals(truth, probabilities, labels, resamples=settings.bootstrap or 200,
                                             confidence=settings.confidence, seed=settings.seed)}
    return {**report, "overall": overall, "data": source}

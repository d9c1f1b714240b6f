"""Per-group fairness audit with fairlearn's MetricFrame, bootstrap intervals and small-group flags.

For each sensitive feature (and their intersection) the audit reports, per group: count,
selection rate, accuracy, TPR, FPR and precision; the between-group differences and ratios;
demographic parity difference and ratio, equalized odds difference, and the four-fifths rule
(each group's selection rate over the largest group's, flagged outside [0.8, 1.25]).

Groups with fewer than ``min_group_size`` rows are listed as too small to judge and left out of
the gaps (never merged into another group). The headline gaps get bootstrap intervals.

Multi-class classifiers (text, image) have no positive class to select, so
:func:`audit_accuracy_by_group` reports their per-group accuracy and macro-F1 and the accuracy
gap between the judged groups, with the same small-group rule and bootstrap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from aiforge.audit.metrics import macro_f1

__all__ = ["AuditSettings", "audit_accuracy_by_group", "audit_predictions"]

METRICS = ("count", "selection_rate", "accuracy", "tpr", "fpr", "precision")


@dataclass(frozen=True)
class AuditSettings:
    """How the audit judges groups and how many bootstrap resamples it draws."""

    min_group_size: int = 30
    bootstrap: int = 200
    confidence: float = 0.95
    intersections: bool = True
    seed: int = 0


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
    report: dict[str, Any] = {"overall": _overall(y, pred, np.asarray(y_score)),
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
    rows = {str(g): {m: float(table.loc[g, m]) for m in METRICS} for g in table.index}
    small = sorted(g for g, r in rows.items() if r["count"] < s.min_group_size)
    judged = [g for g in rows if g not in small]
    for g, r in rows.items():
        r["too_small"] = g in small
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
    stats = np.zeros((s.bootstrap, 3))
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
        stats[b] = [np.ptp(sel), max(np.ptp(tpr), np.ptp(fpr)), np.ptp(acc)]
    lo, hi = (1 - s.confidence) / 2 * 100, (1 + s.confidence) / 2 * 100
    names = ("demographic_parity_difference", "equalized_odds_difference", "accuracy_difference")
    return {name: [float(np.percentile(stats[:, j], lo)), float(np.percentile(stats[:, j], hi))]
            for j, name in enumerate(names)} | {"resamples": s.bootstrap, "confidence": s.confidence}


def audit_accuracy_by_group(y_true: np.ndarray, y_pred: np.ndarray, sensitive: pd.DataFrame,
                            settings: AuditSettings = AuditSettings()) -> dict[str, Any]:
    """Per-group accuracy and macro-F1 of a multi-class classifier (integer class ids), as a JSON-ready dict.

    For each column of ``sensitive``: every group's count, accuracy and macro-F1, which groups are
    too small to judge, and over the judged ones the accuracy difference (largest minus smallest),
    ratio, the worst group and a bootstrap interval of the difference.
    """

    y, pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    correct = (y == pred).astype(np.float64)
    report: dict[str, Any] = {"overall": {"n": len(y), "accuracy": float(correct.mean()) if len(y) else 0.0,
                                          "macro_f1": macro_f1(y, pred)},
                              "settings": settings.__dict__, "features": {}}
    for name in sensitive.columns:
        groups = sensitive[name].astype(str).to_numpy()
        rows = {}
        for g in sorted(set(groups.tolist())):
            mask = groups == g
            rows[g] = {"count": int(mask.sum()), "accuracy": float(correct[mask].mean()),
                       "macro_f1": macro_f1(y[mask], pred[mask]),
                       "too_small": bool(mask.sum() < settings.min_group_size)}
        judged = [g for g, r in rows.items() if not r["too_small"]]
        feat: dict[str, Any] = {"groups": rows, "judged_groups": judged,
                                "small_groups": [g for g in rows if g not in judged],
                                "min_group_size": settings.min_group_size}
        if len(judged) < 2:
            feat["note"] = f"fewer than two groups with at least {settings.min_group_size} rows: gaps not judged"
        else:
            acc = {g: rows[g]["accuracy"] for g in judged}
            hi = max(acc.values())
            feat["accuracy_difference"] = hi - min(acc.values())
            feat["accuracy_ratio"] = min(acc.values()) / hi if hi > 0 else float("nan")
            feat["worst_group"] = min(acc, key=lambda g: acc[g])
            feat["intervals"] = _bootstrap_accuracy(correct, groups, judged, settings)
        report["features"][str(name)] = feat
    return report


def _bootstrap_accuracy(correct: np.ndarray, groups: np.ndarray, judged: list[str],
                        s: AuditSettings) -> dict[str, Any]:
    """Percentile interval of the accuracy difference between judged groups over resampled rows."""
    if s.bootstrap == 0:
        return {}
    keep = np.isin(groups, judged)
    c, codes = correct[keep], np.unique(groups[keep], return_inverse=True)[1]
    k, n = len(judged), len(c)
    rng = np.random.default_rng(s.seed)
    gaps = np.zeros(s.bootstrap)
    for b in range(s.bootstrap):
        idx = rng.integers(0, n, n)
        cnt = np.bincount(codes[idx], minlength=k)
        acc = np.bincount(codes[idx], weights=c[idx], minlength=k)[cnt > 0] / cnt[cnt > 0]
        gaps[b] = np.ptp(acc)
    lo, hi = (1 - s.confidence) / 2 * 100, (1 + s.confidence) / 2 * 100
    return {"accuracy_difference": [float(np.percentile(gaps, lo)), float(np.percentile(gaps, hi))],
            "resamples": s.bootstrap, "confidence": s.confidence}

"""What ``aiforge eval`` and ``aiforge audit`` print and write, for any kind: :class:`CheckReport`.

A kind's ``checks`` module turns its metrics into a report of plain tables (strings), so the CLI
shows every kind the same way without knowing any of them. The classifier pieces shared by
text, image, tabular and chat intents (headline metrics, hardest classes, per-group accuracy
tables) live here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiforge.audit.metrics import Metrics

if TYPE_CHECKING:
    from aiforge.bundle.runtime import Runtime

__all__ = ["CheckReport", "ReportTable", "classifier_tables", "evaluate_classifier", "fairness_tables", "group_tables"]


@dataclass(frozen=True)
class ReportTable:
    """One table to show: a title, column names and rows of already formatted cells."""

    title: str
    columns: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class CheckReport:
    """A kind's metrics on a bundle: the JSON to write, the tables and lines to show, files written."""

    title: str
    metrics: dict[str, Any]
    tables: list[ReportTable] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    def write_json(self, path: Path) -> None:
        """Write ``metrics`` as indented JSON."""
        path.write_text(json.dumps(self.metrics, indent=2), encoding="utf-8")


def _f(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def classifier_tables(metrics: Metrics, *, title: str, limit: int = 10) -> list[ReportTable]:
    """The headline table (n, accuracy, macro-F1, top-5) and the ``limit`` hardest classes by F1."""
    head = ReportTable(title, ["n", "accuracy", "macro-F1", "top-5 accuracy"],
                       [[str(metrics.n), _f(metrics.accuracy), _f(metrics.macro_f1), _f(metrics.top5_accuracy)]])
    worst = sorted(metrics.per_class.items(), key=lambda kv: kv[1]["f1"])[:limit]
    hardest = ReportTable(f"hardest {min(limit, len(worst))} classes (by F1)",
                          ["label", "precision", "recall", "F1", "support"],
                          [[y, f"{s['precision']:.3f}", f"{s['recall']:.3f}", f"{s['f1']:.3f}", str(s["support"])]
                           for y, s in worst])
    return [head, hardest]


def group_tables(report: dict[str, Any]) -> tuple[list[ReportTable], list[str]]:
    """Tables and summary lines of :func:`aiforge.audit.fairness.audit_accuracy_by_group`'s report."""
    tables, lines = [], []
    for name, feat in report["features"].items():
        rows = [[g, str(int(r["count"])), _f(r["accuracy"]), _f(r["macro_f1"]),
                 "too small to judge" if r["too_small"] else ""] for g, r in feat["groups"].items()]
        tables.append(ReportTable(f"by {name}", ["group", "count", "accuracy", "macro-F1", ""], rows))
        if "accuracy_difference" in feat:
            iv = feat.get("intervals", {}).get("accuracy_difference")
            ci = f" (95% CI {iv[0]:.4f}-{iv[1]:.4f})" if iv else ""
            lines.append(f"  accuracy difference {feat['accuracy_difference']:.4f}{ci}, ratio "
                         f"{feat['accuracy_ratio']:.4f}; worst group {feat['worst_group']!r}")
        else:
            lines.append(f"  {feat.get('note', '')}")
    return tables, lines


def fairness_tables(report: dict[str, Any]) -> tuple[list[ReportTable], list[str]]:
    """Tables and summary lines of a binary classifier's fairness report (:func:`audit_predictions`)."""
    o = report["overall"]
    lines = [f"{o['n']} rows, accuracy {o['accuracy']:.4f}, ROC AUC {o['roc_auc']:.4f}, "
             f"selection rate {o['selection_rate']:.4f}"]
    tables = []
    for name, feat in report["features"].items():
        rows = [[g, str(int(r["count"])), f"{r['selection_rate']:.4f}", f"{r['accuracy']:.4f}", f"{r['tpr']:.4f}",
                 f"{r['fpr']:.4f}", f"{r['precision']:.4f}", "too small to judge" if r["too_small"] else ""]
                for g, r in feat["groups"].items()]
        tables.append(ReportTable(f"by {name}", ["group", "count", "selection rate", "accuracy", "TPR", "FPR",
                                                 "precision", ""], rows))
        if "demographic_parity_difference" in feat:
            iv = feat.get("intervals", {}).get("demographic_parity_difference", [float("nan")] * 2)
            ff = feat["four_fifths"]
            lines.append(f"by {name}: DP difference {feat['demographic_parity_difference']:.4f} (95% CI "
                         f"{iv[0]:.4f}-{iv[1]:.4f}), DP ratio {feat['demographic_parity_ratio']:.4f}, EO difference "
                         f"{feat['equalized_odds_difference']:.4f}, four-fifths "
                         f"{'passes' if ff['passes'] else 'FLAGGED ' + ', '.join(ff['flagged_groups'])}")
        else:
            lines.append(f"by {name}: {feat.get('note', '')}")
    return tables, lines


def evaluate_classifier(rt: Runtime, data: Path, *, columns: Mapping[str, str]) -> CheckReport:
    """A classifier bundle's accuracy, macro-F1, top-5 and per-class scores on a labelled file (text, image).

    Raises:
        DataError: the file or its columns are bad, or it holds labels the bundle never saw.
    """
    metrics = rt.evaluate_file(data, columns=columns)
    return CheckReport(f"{rt.name}:{rt.version} on {data}", metrics.to_dict(),
                       classifier_tables(metrics, title=f"{rt.name}:{rt.version} on {data.name}"))

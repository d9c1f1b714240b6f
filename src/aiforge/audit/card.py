"""The model card's per-group audit section of a multi-class classifier (text, image), from its audit.json.

Written when the bundle was trained with group columns (``data.sensitive_features``): for each
feature, every group's size and accuracy/macro-F1/TPR/FPR with 95% intervals, the gaps between
the judged groups with theirs, and the spec's quality and fairness gates decided on the same
numbers (size and latency are measured by ``aiforge ship``, not here).
"""

from __future__ import annotations

import math
from typing import Any

from aiforge.audit.gates import CLASSIFIER_GATES, GROUP_GATES, GateResult, Measurements, ReleaseGates, evaluate_gates

__all__ = ["classifier_gate_results", "group_audit_card"]


def classifier_gate_results(audit: dict[str, Any], gates: ReleaseGates, features: list[str]) -> list[GateResult]:
    """The quality and per-group gates ``gates`` sets, decided on an audit.json body (its ``overall``/``features``)."""
    m = Measurements(audit={**audit["overall"], "features": audit["features"]}, size_mb=math.nan,
                     p95_latency_ms=math.nan)
    return evaluate_gates((*CLASSIFIER_GATES, *GROUP_GATES), gates, m, features)


def _cell(value: Any, iv: Any = None) -> str:
    if not isinstance(value, int | float) or not math.isfinite(value):
        return "n/a"
    if isinstance(iv, list) and len(iv) == 2 and all(isinstance(v, int | float) and math.isfinite(v) for v in iv):
        return f"{value:.3f} ({iv[0]:.3f}-{iv[1]:.3f})"
    return f"{value:.3f}"


def group_audit_card(audit: dict[str, Any], results: list[GateResult], *, split: str) -> str:
    """The markdown section: per-group tables with intervals, gaps, and the gates' decisions."""
    out = ["", "## Per-group audit", "",
           f"Measured on {split} with the exported model; 95% intervals (Wilson for a group's accuracy, "
           "percentile bootstrap for the rest). Groups under "
           f"{audit.get('settings', {}).get('min_group_size', 30)} rows are too small to judge: they are shown "
           "but left out of the gaps, and make the gates on their feature undecided. The full report is "
           "`audit.json`."]
    for name, feat in audit["features"].items():
        out += ["", f"### By {name}", "", "| group | rows | accuracy | macro-F1 | TPR | FPR | |",
                "|---|---|---|---|---|---|---|"]
        for g, r in feat["groups"].items():
            iv = r.get("intervals", {})
            out.append(f"| {g} | {r['count']} | {_cell(r['accuracy'], iv.get('accuracy'))} | "
                       f"{_cell(r['macro_f1'], iv.get('macro_f1'))} | {_cell(r['tpr'], iv.get('tpr'))} | "
                       f"{_cell(r['fpr'], iv.get('fpr'))} | {'too small to judge' if r['too_small'] else ''} |")
        if "accuracy_difference" in feat:
            iv = feat.get("intervals", {})
            gaps = ", ".join(f"{label} {_cell(feat[f'{key}_difference'], iv.get(f'{key}_difference'))}"
                             for key, label in (("accuracy", "accuracy"), ("macro_f1", "macro-F1"),
                                                ("tpr", "TPR"), ("fpr", "FPR")))
            out += ["", f"Differences between groups (largest minus smallest): {gaps}; worst group "
                        f"`{feat['worst_group']}`."]
        else:
            out += ["", str(feat.get("note", ""))]
    if results:
        out += ["", "### Gates", "", "| gate | feature | limit | measured (95% CI) | decision | note |",
                "|---|---|---|---|---|---|"]
        for r in results:
            out.append(f"| `{r.key}` | {r.feature or ''} | {r.limit} | {_cell(r.measured, r.interval)} | "
                       f"{r.decision} ({r.rule}) | {r.note} |")
        out += ["", "Size and latency gates are measured by `aiforge ship`, which re-checks these on the bundle."]
    return "\n".join(out) + "\n"

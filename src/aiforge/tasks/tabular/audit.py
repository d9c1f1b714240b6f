"""Audit an exported tabular graph (what is served) on a labelled table; write audit.json and report.html."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aiforge.audit.baseline import BaselineReport
from aiforge.audit.fairness import AuditSettings, audit_predictions
from aiforge.bundle.runtime import Runtime
from aiforge.data.readers import read_table
from aiforge.errors import BundleError, DataError
from aiforge.tasks.tabular.data import frame_columns
from aiforge.tasks.tabular.fitted import TabularAudit
from aiforge.tasks.tabular.report import html_report
from aiforge.tasks.tabular.runtime import TabularRuntime
from aiforge.tasks.tabular.spec import AuditSpec

__all__ = ["TabularAudit", "audit_bundle", "audit_graph", "write_audit"]




def settings_from(audit_spec: Any, seed: int = 0) -> AuditSettings:
    return AuditSettings(min_group_size=audit_spec.min_group_size, bootstrap=audit_spec.bootstrap,
                         confidence=audit_spec.confidence, intersections=audit_spec.intersections, seed=seed)


def audit_scores(y: np.ndarray, p: np.ndarray, sensitive: pd.DataFrame, settings: AuditSettings) -> TabularAudit:
    """Audit positive-class probabilities ``p`` (label = p > 0.5, the served rule)."""
    pred = (p > 0.5).astype(np.int64)
    return TabularAudit(audit_predictions(y, pred, p, sensitive, settings), y, p, pred, sensitive)


def audit_graph(graph: Path, feed: dict[str, np.ndarray], frame: Any, audit_spec: Any, *,
                labels: list[str]) -> TabularAudit:
    """Run the ONNX graph at ``graph`` on ``feed`` and audit it against ``frame``'s labels and groups."""
    # lazy: onnx and skl2onnx stay out of the torch-free audit path
    from aiforge.tasks.tabular.export import onnx_proba

    p = onnx_proba(graph, feed)
    return audit_scores(frame.y, p, frame.sensitive, settings_from(audit_spec))


def audit_bundle(bundle: str | Path | Runtime, data: str | Path, *, output: Path | None = None,
                 home: str | Path | None = None, sensitive_features: list[str] | None = None) -> TabularAudit:
    """Audit a registered tabular bundle on a labelled file with the torch-free Runtime.

    Writes ``audit.json`` and ``report.html`` into ``output`` when given.

    Raises:
        DataError: the file lacks the label or a sensitive column, or holds unknown labels.
        BundleError: the bundle is not a tabular one.
    """

    rt = bundle if isinstance(bundle, Runtime) else Runtime.load(bundle, home=home)
    if not isinstance(rt, TabularRuntime):
        raise BundleError(f"{bundle}: aiforge audit needs a tabular-classification bundle, got {rt.manifest.task!r}.")
    df = read_table(Path(data), infer_types=True)
    sens = sensitive_features or rt.sensitive_features
    missing = [c for c in [rt.label_column, *sens] if c not in df.columns]
    if missing:
        raise DataError(f"{data}: column(s) {missing} not found (the label and sensitive features the bundle was "
                        f"audited with). Columns are {list(df.columns)}.")
    truth = df[rt.label_column].astype(str)
    unknown = sorted(set(truth) - set(rt.labels))
    if unknown:
        raise DataError(f"{data}: column {rt.label_column!r} holds {unknown[:5]}, not one of {rt.labels}.")
    y = (truth == rt.labels[1]).to_numpy().astype(np.int64)
    p = rt.proba_columns(frame_columns(df, rt.schema, str(data)))[:, 1].astype(np.float64)
    audit_spec = AuditSpec.model_validate(rt.manifest.extra.get("spec", {}).get("audit", {}))
    result = audit_scores(y, p, df[sens].astype(str).reset_index(drop=True), settings_from(audit_spec))
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
        write_audit(output, result, title=f"{rt.name}:{rt.version}: fairness audit on {Path(data).name}",
                    tradeoff=json.loads((rt.path / "metrics.json").read_text(encoding="utf-8")).get("tradeoff", [])
                    if (rt.path / "metrics.json").is_file() else [])
    return result


def write_audit(directory: Path, audit: TabularAudit, *, title: str, tradeoff: list[dict[str, Any]],
                baseline: BaselineReport | None = None) -> None:
    """``audit.json`` and the self-contained ``report.html`` (with the fit's ``baseline``) in ``directory``."""

    (directory / "audit.json").write_text(json.dumps(audit.report, indent=2), encoding="utf-8")
    (directory / "report.html").write_text(html_report(audit, title=title, tradeoff=tradeoff, baseline=baseline),
                                           encoding="utf-8")

"""What ``aiforge eval``, ``audit`` and ``ship`` measure on a tabular bundle (torch-free).

The gates read the fairness audit of the exported ONNX graph (:mod:`aiforge.tasks.tabular.audit`):
accuracy and ROC AUC overall, and per gated sensitive feature the demographic parity and
equalized odds differences and the four-fifths rule, each with its bootstrap interval; a feature
with a group below ``audit.min_group_size`` makes its fairness gates undecided. Without ``--data``
they are measured on the held-out test split (the test file, or rows held out of training).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from aiforge.audit.checks import Measured
from aiforge.audit.gates import Gate, Interval, Measurements, ReleaseGates, Verdict, small_groups_reason
from aiforge.audit.report import CheckReport, classifier_tables, fairness_tables
from aiforge.bundle.runtime import Runtime
from aiforge.data.readers import read_table
from aiforge.errors import BundleError
from aiforge.spec import BaseSpec
from aiforge.tasks.tabular.audit import audit_bundle, audit_scores, settings_from
from aiforge.tasks.tabular.data import frame_columns, load_tabular
from aiforge.tasks.tabular.runtime import TabularRuntime
from aiforge.tasks.tabular.spec import GateSpec, TabularSpec

__all__ = ["CHECKS", "TABULAR_GATES", "TabularChecks"]


def _tabular_runtime(rt: Runtime) -> TabularRuntime:
    if not isinstance(rt, TabularRuntime):
        raise BundleError(f"{rt.path}: expected a tabular-classification bundle, got {rt.manifest.task!r}.")
    return rt


def _feat(m: Measurements, feature: str | None, key: str) -> float | None:
    value = m.audit["features"].get(feature or "", {}).get(key)
    return float(value) if value is not None else None


def _pair(value: object) -> Interval | None:
    if isinstance(value, list | tuple) and len(value) == 2:
        return float(value[0]), float(value[1])
    return None


def _overall_iv(key: str) -> Callable[[Measurements, str | None], Interval | None]:
    def read(m: Measurements, feature: str | None) -> Interval | None:
        return _pair(m.audit["overall"].get("intervals", {}).get(key))

    return read


def _feat_iv(key: str) -> Callable[[Measurements, str | None], Interval | None]:
    def read(m: Measurements, feature: str | None) -> Interval | None:
        return _pair(m.audit["features"].get(feature or "", {}).get("intervals", {}).get(key))

    return read


def _four_fifths(m: Measurements, feature: str | None) -> float | None:
    ff = m.audit["features"].get(feature or "", {}).get("four_fifths")
    return None if ff is None else float(ff["min_max_ratio"])


def _four_fifths_verdict(m: Measurements, feature: str | None) -> Verdict:
    ff = m.audit["features"][feature or ""]["four_fifths"]
    if ff["passes"]:
        return Verdict(True)
    return Verdict(False, f"flagged: {', '.join(ff['flagged_groups']) or 'min/max ratio below 0.8'}")


TABULAR_GATES: tuple[Gate, ...] = (
    Gate("min_accuracy", "accuracy of the exported model", "min", lambda m, f: m.audit["overall"]["accuracy"],
         interval=_overall_iv("accuracy")),
    Gate("min_roc_auc", "ROC AUC of the exported model", "min", lambda m, f: m.audit["overall"]["roc_auc"],
         interval=_overall_iv("roc_auc")),
    Gate("max_demographic_parity_difference", "demographic parity difference", "max",
         lambda m, f: _feat(m, f, "demographic_parity_difference"), per_feature=True,
         interval=_feat_iv("demographic_parity_difference"), undecided=small_groups_reason),
    Gate("max_equalized_odds_difference", "equalized odds difference", "max",
         lambda m, f: _feat(m, f, "equalized_odds_difference"), per_feature=True,
         interval=_feat_iv("equalized_odds_difference"), undecided=small_groups_reason),
    Gate("four_fifths", "four-fifths rule (smallest / largest selection rate >= 0.8)", "true", _four_fifths,
         per_feature=True, judge=_four_fifths_verdict, interval=_feat_iv("demographic_parity_ratio"),
         undecided=small_groups_reason, fixed_limit=0.8),
)


class TabularChecks:
    """Classifier metrics, the fairness audit and the quality and fairness gates of tabular bundles."""

    gates = TABULAR_GATES

    def evaluate(self, rt: Runtime, data: Path, *, columns: Mapping[str, str]) -> CheckReport:
        """Accuracy, macro-F1, per-class scores and ROC AUC on a labelled CSV/Parquet table."""
        tab_rt = _tabular_runtime(rt)
        metrics = tab_rt.evaluate_file(data, columns=columns)
        from sklearn.metrics import roc_auc_score

        label = columns.get("label") or tab_rt.label_column
        df = read_table(data, infer_types=True)
        y = (df[label].astype(str) == tab_rt.labels[1]).to_numpy()
        p = tab_rt.proba_columns(frame_columns(df, tab_rt.schema, str(data)))[:, 1]
        auc = float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")
        metrics = replace(metrics, extra={**metrics.extra, "roc_auc": auc})
        return CheckReport(f"{rt.name}:{rt.version} on {data}", metrics.to_dict(),
                           classifier_tables(metrics, title=f"{rt.name}:{rt.version} on {data.name}"),
                           [f"ROC AUC {auc:.4f}"])

    def audit(self, rt: Runtime, data: Path, *, sensitive: Sequence[str], output: Path) -> CheckReport:
        """The fairness audit: per-group rates, gaps with intervals, four-fifths; report.html in ``output``."""
        result = audit_bundle(_tabular_runtime(rt), data, output=output, sensitive_features=list(sensitive) or None)
        tables, lines = fairness_tables(result.report)
        return CheckReport(f"{rt.name}:{rt.version}: fairness audit on {data.name}", result.report, tables, lines,
                           [output / "report.html"])

    def measure(self, rt: Runtime, spec: BaseSpec, gates: ReleaseGates, data: Path | None) -> Measured:
        """The fairness audit of the exported graph on ``data``, else the spec's test (or validation) split.

        Raises:
            BundleError: the bundle has no example record to time.
            DataError: the data lacks the label or a sensitive column.
        """
        tab_rt = _tabular_runtime(rt)
        if not isinstance(spec, TabularSpec):
            raise BundleError(f"{rt.path}: the stored spec is not a tabular spec.")
        if data is not None:
            audit, source = audit_bundle(tab_rt, data), str(data)
        else:
            tab = load_tabular(spec, seed=spec.model.seed)
            frame = tab.test
            p = tab_rt.proba_columns(frame_columns(frame.frame, tab_rt.schema))[:, 1].astype(np.float64)
            audit = audit_scores(frame.y, p, frame.sensitive, settings_from(spec.audit))
            source = f"{tab.test_split} ({len(frame)} rows)"
        example = tab_rt.pipeline.get("example")
        if not isinstance(example, dict):
            raise BundleError(f"{rt.path}: pipeline.json has no example record to time.")
        mitigated = tab_rt.pipeline.get("mitigation", {}).get("sensitive_feature")
        chosen = gates.sensitive_features if isinstance(gates, GateSpec) else None
        features = chosen or ([mitigated] if mitigated else tab_rt.sensitive_features[:1])
        return Measured(audit.report, lambda: tab_rt.predict([example]), features=list(features), source=source)


CHECKS = TabularChecks()

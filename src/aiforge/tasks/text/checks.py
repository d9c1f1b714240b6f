"""What ``aiforge eval``, ``audit`` and ``ship`` measure on a text-classification bundle (torch-free).

With group columns (``data.sensitive_features`` or ``--sensitive``) the audit and the gates add
per-group accuracy, macro-F1, TPR and FPR and their gaps (bootstrap intervals), in the audit.json
schema every kind shares (:mod:`aiforge.audit.fairness`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aiforge.audit.checks import Measured
from aiforge.audit.fairness import AuditSettings, classifier_audit
from aiforge.audit.gates import CLASSIFIER_GATES, GROUP_GATES, GroupGates, ReleaseGates
from aiforge.audit.metrics import classification_metrics
from aiforge.audit.report import CheckReport, classifier_tables, evaluate_classifier, group_tables
from aiforge.bundle.runtime import Runtime
from aiforge.errors import BundleError, DataError
from aiforge.spec import BaseSpec
from aiforge.tasks.text.data import TextDataset, check_test_labels, load_text_dataset, load_text_splits
from aiforge.tasks.text.runtime import TextRuntime
from aiforge.tasks.text.spec import TextSpec

__all__ = ["CHECKS", "TextChecks"]


def _text_runtime(rt: Runtime) -> TextRuntime:
    if not isinstance(rt, TextRuntime):
        raise BundleError(f"{rt.path}: expected a text-classification bundle, got {rt.manifest.task!r}.")
    return rt


def _columns(rt: Runtime, columns: Mapping[str, str]) -> dict[str, str]:
    return {"text": "text", "label": "label", **rt.manifest.extra.get("columns", {}), **columns}


def _labelled(rt: TextRuntime, data: Path, columns: Mapping[str, str], groups: Sequence[str] = ()) -> TextDataset:
    cols = _columns(rt, columns)
    ds = load_text_dataset(data, text_column=cols["text"], label_column=cols["label"], group_columns=list(groups))
    check_test_labels(ds, rt.labels)
    return ds


def _stored_groups(rt: Runtime) -> list[str]:
    data = rt.manifest.extra.get("spec", {}).get("data", {})
    return list(data.get("sensitive_features") or [])


def group_audit(ds: TextDataset, probs: np.ndarray, labels: list[str], settings: AuditSettings) -> dict[str, Any]:
    """The shared audit.json body: overall metrics with intervals, per-class, and per-group for ``ds.groups``."""
    import pandas as pd

    groups = pd.DataFrame(ds.groups) if ds.groups else pd.DataFrame(index=range(len(ds)))
    return classifier_audit(ds.labels, probs, labels, groups, settings, source=ds.source)


def representative(texts: Sequence[str]) -> str:
    """The text of median length: what a single-item latency probe sends."""
    order = sorted(texts, key=len)
    return order[len(order) // 2]


class TextChecks:
    """Classifier metrics, per-class and per-group reports, and the classifier gates of text bundles."""

    gates = (*CLASSIFIER_GATES, *GROUP_GATES)

    def evaluate(self, rt: Runtime, data: Path, *, columns: Mapping[str, str]) -> CheckReport:
        """Accuracy, macro-F1, top-5 and per-class scores on a labelled CSV/JSONL/Parquet file."""
        return evaluate_classifier(rt, data, columns=columns)

    def audit(self, rt: Runtime, data: Path, *, sensitive: Sequence[str], output: Path) -> CheckReport:
        """Every class's precision/recall/F1, and per-group metrics for ``sensitive`` (default: as trained)."""
        text_rt = _text_runtime(rt)
        columns = list(sensitive) or _stored_groups(rt)
        ds = _labelled(text_rt, data, {}, columns)
        probs = text_rt.predict_proba(ds.texts)
        body = group_audit(ds, probs, text_rt.labels, AuditSettings(min_group_size=_min_group_size(rt)))
        metrics = classification_metrics(ds.labels, probs, text_rt.labels)
        tables = classifier_tables(metrics, title=f"{rt.name}:{rt.version} on {data.name}",
                                   limit=len(text_rt.labels))
        lines: list[str] = []
        if columns:
            more, lines = group_tables(body)
            tables += more
        else:
            lines.append("per-class report only; give --sensitive COLUMN (a column of the data) for per-group "
                         "accuracy")
        return CheckReport(f"{rt.name}:{rt.version}: audit on {data.name}", body, tables, lines)

    def measure(self, rt: Runtime, spec: BaseSpec, gates: ReleaseGates, data: Path | None) -> Measured:
        """Classifier metrics (with intervals) and per-group gaps on ``data``, else the spec's test split.

        Without a test file the split is the held-out one when the spec names group columns, else
        the validation split (a text spec without groups holds no test rows out).
        """
        text_rt = _text_runtime(rt)
        if not isinstance(spec, TextSpec):
            raise BundleError(f"{rt.path}: the stored spec is not a text-classification spec.")
        chosen = gates.sensitive_features if isinstance(gates, GroupGates) else None
        features = list(chosen or spec.data.sensitive_features or [])
        if data is not None:
            ds = _labelled(text_rt, data, {}, features)
        else:
            splits = load_text_splits(spec.data, seed=spec.train.seed)
            ds = splits.test if splits.test is not None else splits.validation
            missing = [f for f in features if f not in ds.groups]
            if missing:
                raise DataError(f"gates.sensitive_features {missing} are not among data.sensitive_features "
                                f"{spec.data.sensitive_features or []}; list them there.")
        size = gates.min_group_size if isinstance(gates, GroupGates) else 30
        body = group_audit(ds, text_rt.predict_proba(ds.texts), text_rt.labels, AuditSettings(min_group_size=size))
        audit = {**body["overall"], "features": body["features"], "settings": body["settings"]}
        probe = representative(ds.texts)
        return Measured(audit, lambda: text_rt.predict([probe]), features=features,
                        source=f"{ds.source} ({len(ds)} rows)")


def _min_group_size(rt: Runtime) -> int:
    value = rt.manifest.extra.get("spec", {}).get("gates", {}).get("min_group_size")
    return int(value) if isinstance(value, int) else 30


CHECKS = TextChecks()

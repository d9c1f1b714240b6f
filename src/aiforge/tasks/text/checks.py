"""What ``aiforge eval``, ``audit`` and ``ship`` measure on a text-classification bundle (torch-free)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from aiforge.audit.checks import Measured
from aiforge.audit.fairness import AuditSettings, audit_accuracy_by_group
from aiforge.audit.gates import CLASSIFIER_GATES, ReleaseGates
from aiforge.audit.metrics import classification_metrics
from aiforge.audit.report import CheckReport, classifier_tables, evaluate_classifier, group_tables
from aiforge.bundle.runtime import Runtime
from aiforge.data.readers import read_table
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


def _labelled(rt: TextRuntime, data: Path, columns: Mapping[str, str]) -> TextDataset:
    cols = _columns(rt, columns)
    ds = load_text_dataset(data, text_column=cols["text"], label_column=cols["label"])
    check_test_labels(ds, rt.labels)
    return ds


def representative(texts: Sequence[str]) -> str:
    """The text of median length: what a single-item latency probe sends."""
    order = sorted(texts, key=len)
    return order[len(order) // 2]


class TextChecks:
    """Classifier metrics, per-class and per-group reports, and the classifier gates of text bundles."""

    gates = CLASSIFIER_GATES

    def evaluate(self, rt: Runtime, data: Path, *, columns: Mapping[str, str]) -> CheckReport:
        """Accuracy, macro-F1, top-5 and per-class scores on a labelled CSV/JSONL/Parquet file."""
        return evaluate_classifier(rt, data, columns=columns)

    def audit(self, rt: Runtime, data: Path, *, sensitive: Sequence[str], output: Path) -> CheckReport:
        """Every class's precision/recall/F1, and per-group accuracy for each ``sensitive`` column."""
        text_rt = _text_runtime(rt)
        ds = _labelled(text_rt, data, {})
        probs = text_rt.predict_proba(ds.texts)
        metrics = classification_metrics(ds.labels, probs, text_rt.labels)
        tables = classifier_tables(metrics, title=f"{rt.name}:{rt.version} on {data.name}",
                                   limit=len(text_rt.labels))
        body = {"overall": metrics.to_dict()}
        lines: list[str] = []
        if sensitive:
            frame = read_table(data)
            missing = [c for c in sensitive if c not in frame.columns]
            if missing:
                raise DataError(f"{data}: sensitive column(s) {missing} not found. Columns are "
                                f"{list(frame.columns)}.")
            index = {y: i for i, y in enumerate(text_rt.labels)}
            groups = audit_accuracy_by_group(np.array([index[y] for y in ds.labels]), probs.argmax(axis=1),
                                             frame[list(sensitive)].astype(str).reset_index(drop=True),
                                             AuditSettings())
            body["groups"] = groups
            more, lines = group_tables(groups)
            tables += more
        else:
            lines.append("per-class report only; give --sensitive COLUMN (a column of the data) for per-group "
                         "accuracy")
        return CheckReport(f"{rt.name}:{rt.version}: audit on {data.name}", body, tables, lines)

    def measure(self, rt: Runtime, spec: BaseSpec, gates: ReleaseGates, data: Path | None) -> Measured:
        """Classifier metrics on ``data``, else the spec's test split, else its validation split."""
        text_rt = _text_runtime(rt)
        if data is not None:
            ds = _labelled(text_rt, data, {})
        else:
            if not isinstance(spec, TextSpec):
                raise BundleError(f"{rt.path}: the stored spec is not a text-classification spec.")
            splits = load_text_splits(spec.data, seed=spec.train.seed)
            ds = splits.test if splits.test is not None else splits.validation
        metrics = classification_metrics(ds.labels, text_rt.predict_proba(ds.texts), text_rt.labels)
        probe = representative(ds.texts)
        return Measured(metrics.to_dict(), lambda: text_rt.predict([probe]), source=ds.source)


CHECKS = TextChecks()

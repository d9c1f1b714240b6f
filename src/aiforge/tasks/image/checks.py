"""What ``aiforge eval``, ``audit`` and ``ship`` measure on an image-classification bundle (torch-free).

Group columns (``--sensitive`` for audit, ``gates.sensitive_features`` for ship; default: the spec's
``data.sensitive_features``) are columns of the (path, label, ...) CSV given, else looked up in the
spec's groups file (``data.groups``) by image path; without ``--data``, ship measures the spec's test
split with its groups. The audit.json and the group gates are those of every classifier kind.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aiforge.audit.checks import Measured, stored_spec
from aiforge.audit.fairness import AuditSettings, classifier_audit
from aiforge.audit.gates import CLASSIFIER_GATES, GROUP_GATES, GroupGates, ReleaseGates
from aiforge.audit.metrics import classification_metrics
from aiforge.audit.report import CheckReport, classifier_tables, evaluate_classifier, group_tables
from aiforge.bundle.runtime import Runtime
from aiforge.data.readers import read_table
from aiforge.errors import BundleError, DataError
from aiforge.spec import BaseSpec
from aiforge.tasks.image.data import load_image_splits
from aiforge.tasks.image.groups import read_groups
from aiforge.tasks.image.runtime import ImageRuntime
from aiforge.tasks.image.spec import ImageSpec

__all__ = ["CHECKS", "ImageChecks"]


def _image_runtime(rt: Runtime) -> ImageRuntime:
    if not isinstance(rt, ImageRuntime):
        raise BundleError(f"{rt.path}: expected an image-classification bundle, got {rt.manifest.task!r}.")
    return rt


def _proba(rt: ImageRuntime, items: Sequence[Any]) -> np.ndarray:
    if not items:
        return np.zeros((0, len(rt.labels)), dtype=np.float32)
    return np.concatenate([rt.predict_proba(list(items[i:i + 64])) for i in range(0, len(items), 64)])


def _labelled(rt: ImageRuntime, data: Path, columns: Mapping[str, str]) -> tuple[list[Path], list[str]]:
    paths, labels = rt._listed(data, columns)
    if labels is None:
        raise DataError(f"{data}: needs labels: a folder with one sub-folder per class or a CSV with path and label "
                        "columns.")
    unknown = sorted(set(labels) - set(rt.labels))
    if unknown:
        raise DataError(f"{data}: labels never seen in training: {unknown[:10]}.")
    if not paths:
        raise DataError(f"{data}: no images found.")
    return paths, labels


class ImageChecks:
    """Classifier metrics, per-class and per-group reports, and the classifier gates of image bundles."""

    gates = (*CLASSIFIER_GATES, *GROUP_GATES)

    def evaluate(self, rt: Runtime, data: Path, *, columns: Mapping[str, str]) -> CheckReport:
        """Accuracy, macro-F1, top-5 and per-class scores on a class-folder tree or a (path, label) CSV."""
        return evaluate_classifier(rt, data, columns=columns)

    def audit(self, rt: Runtime, data: Path, *, sensitive: Sequence[str], output: Path) -> CheckReport:
        """Every class's precision/recall/F1; per-group accuracy for ``sensitive`` columns of a CSV."""
        image_rt = _image_runtime(rt)
        spec = _image_spec(rt)
        sensitive = list(sensitive) or list((spec.data.sensitive_features if spec and spec.data else None) or [])
        paths, labels = _labelled(image_rt, data, {})
        probs = _proba(image_rt, paths)
        metrics = classification_metrics(labels, probs, image_rt.labels)
        tables = classifier_tables(metrics, title=f"{rt.name}:{rt.version} on {data.name}",
                                   limit=len(image_rt.labels))
        lines: list[str] = []
        body = classifier_audit(labels, probs, image_rt.labels, _groups(data, sensitive, paths, spec),
                                AuditSettings(min_group_size=spec.gates.min_group_size if spec else 30),
                                source=str(data))
        if sensitive:
            more, lines = group_tables(body)
            tables += more
        else:
            lines.append("per-class report only; give a CSV (path, label, COLUMN) and --sensitive COLUMN for "
                         "per-group accuracy")
        return CheckReport(f"{rt.name}:{rt.version}: audit on {data.name}", body, tables, lines)

    def measure(self, rt: Runtime, spec: BaseSpec, gates: ReleaseGates, data: Path | None) -> Measured:
        """Classifier metrics on ``data``, else the spec's test split, else its validation split.

        Raises:
            DataError: a quality gate is set but there is no data (a zero-shot bundle without ``--data``).
        """
        image_rt = _image_runtime(rt)
        chosen = gates.sensitive_features if isinstance(gates, GroupGates) else None
        trained = spec.data.sensitive_features if isinstance(spec, ImageSpec) and spec.data is not None else None
        features = list(chosen or trained or [])
        if data is not None:
            paths, labels = _labelled(image_rt, data, {})
            items: list[Any] = list(paths)
            source = str(data)
            groups = _groups(data, features, paths, spec if isinstance(spec, ImageSpec) else None)
        elif isinstance(spec, ImageSpec) and spec.data is not None:
            missing = [f for f in features if f not in (trained or [])]
            if missing:
                raise DataError(f"{rt.name}: gates.sensitive_features {missing} are not among data.sensitive_features "
                                f"{trained or []}; list them there (with data.groups or CSV columns), or pass --data "
                                "CSV (path, label and those columns).")
            splits = load_image_splits(spec.data, seed=spec.train.seed)
            ds = splits.test if splits.test is not None else splits.validation
            items, labels, source = [ds.image(i) for i in range(len(ds))], list(ds.labels), ds.source
            groups = pd.DataFrame({f: ds.groups[f] for f in features}) if features else pd.DataFrame(
                index=range(len(labels)))
        elif features:
            raise DataError(f"{rt.name}: gates.sensitive_features {features} need labelled images with groups; "
                            "pass --data CSV (path, label and those columns).")
        else:
            quality = [g.key for g in self.gates if gates.is_set(g.key)]
            if quality:
                raise DataError(f"{rt.name}: gate(s) {quality} need labelled images; this bundle's spec has no "
                                "data block (zero-shot). Pass --data FOLDER_OR_CSV.")
            r = image_rt.image.resolution
            blank = np.full((r, r, 3), 128, dtype=np.uint8)  # nothing to be representative of: a grey photo
            return Measured({}, lambda: image_rt.predict([blank]), source="(no data: a grey image for latency)")
        size = gates.min_group_size if isinstance(gates, GroupGates) else 30
        body = classifier_audit(labels, _proba(image_rt, items), image_rt.labels, groups,
                                AuditSettings(min_group_size=size), source=source)
        probe = items[0]
        return Measured({**body["overall"], "features": body["features"], "settings": body["settings"]},
                        lambda: image_rt.predict([probe]), features=features, source=f"{source} ({len(labels)} rows)")


def _image_spec(rt: Runtime) -> ImageSpec | None:
    """The bundle's stored spec, or ``None`` for a bundle that stores none (audited without trained groups)."""
    try:
        spec = stored_spec(rt)
    except BundleError:
        return None
    return spec if isinstance(spec, ImageSpec) else None


def _groups(data: Path, columns: Sequence[str], paths: Sequence[Path], spec: ImageSpec | None) -> pd.DataFrame:
    """Each image's groups: columns of the labelled CSV ``data``, else the spec's groups file by image path.

    Raises:
        DataError: a column in neither, or an image the groups file does not list.
    """
    if not columns:
        return pd.DataFrame(index=range(len(paths)))
    if data.suffix.lower() == ".csv":
        frame = read_table(data)
        if all(c in frame.columns for c in columns):
            if len(frame) != len(paths):
                raise DataError(f"{data}: {len(frame)} rows but {len(paths)} images were read; every row needs "
                                "an image.")
            return frame[list(columns)].astype(str).reset_index(drop=True)
        if spec is None or spec.data is None or spec.data.groups is None:
            missing = [c for c in columns if c not in frame.columns]
            raise DataError(f"{data}: sensitive column(s) {missing} not found. Columns are {list(frame.columns)}.")
    if spec is None or spec.data is None or spec.data.groups is None:
        raise DataError(f"{data}: sensitive column(s) {list(columns)} need a CSV with path, label and those columns, "
                        "or a bundle trained with data.groups (a file of path and group columns).")
    table = read_groups(Path(spec.data.groups), path_column=spec.data.path_column, columns=list(columns),
                        check_files=False)
    rows = []
    for p in paths:
        found = table.lookup(str(p))
        if found is None:
            raise DataError(f"{table.source}: no row for image {str(p)!r}; every audited image needs its group in "
                            f"{list(columns)}.")
        rows.append(found)
    return pd.DataFrame(rows, columns=list(columns))


CHECKS = ImageChecks()

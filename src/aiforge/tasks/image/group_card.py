"""The image card's per-group audit section, for a model trained with ``data.sensitive_features``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from aiforge.audit.card import classifier_gate_results, group_audit_card
from aiforge.audit.fairness import AuditSettings, classifier_audit
from aiforge.tasks.image.data import ImageSplits

if TYPE_CHECKING:
    from aiforge.tasks.image.fitted import FittedImageClassifier
    from aiforge.tasks.image.spec import ImageSpec

__all__ = ["image_group_card"]


def image_group_card(spec: ImageSpec, fitted: FittedImageClassifier, splits: ImageSplits | None) -> str:
    """Per-group accuracy/macro-F1/TPR/FPR with intervals on the test split, and the gates on them ("" without groups).

    Measured with the trained model (PyTorch fp32; the exported graph matches it within the parity
    limit above); ``aiforge ship`` and ``aiforge audit`` measure the exported bundle itself.
    """
    columns = list(spec.data.sensitive_features or []) if spec.data is not None else []
    if not columns or splits is None:
        return ""
    ds = splits.test or splits.validation
    if not ds.groups:
        return ""
    body = classifier_audit(list(ds.labels), fitted.predict_proba(ds), fitted.labels,
                            pd.DataFrame({c: ds.groups[c] for c in columns}),
                            AuditSettings(min_group_size=spec.gates.min_group_size), source=ds.source)
    results = classifier_gate_results(body, spec.gates, list(spec.gates.sensitive_features or columns))
    split = "held-out test split (images that chose nothing)" if "held-out" in ds.source else (
        "test set" if splits.test is not None else "validation split")
    return group_audit_card(body, results, split=f"the {split} ({len(ds)} images, PyTorch fp32)")

"""What a tabular fit and a tabular audit produce: ``TabularFitResult`` and ``TabularAudit``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from aiforge.audit.baseline import BaselineReport
from aiforge.tasks.tabular.data import (
    TabularData,
)
from aiforge.tasks.tabular.schema import TabularSchema

if TYPE_CHECKING:  # scikit-learn stays out of the torch-free audit path that reads TabularAudit
    from aiforge.tasks.tabular.choose import MitigationChoice
    from aiforge.tasks.tabular.models import TabularModel

__all__ = ["TabularAudit", "TabularFitResult"]


@dataclass
class TabularFitResult:
    """What a tabular fit produced: data, schema, the unmitigated and shipped models, comparisons."""

    data: TabularData
    schema: TabularSchema
    base: TabularModel
    shipped: TabularModel
    selection: dict[str, float]
    evaluation: dict[str, dict[str, Any]]  # setting -> sklearn-side numbers (with intervals) on the test split
    eval_split: str
    models: dict[str, TabularModel] = field(default_factory=dict)
    train_seconds: float = 0.0
    baseline: BaselineReport | None = None  # the model against its simple baselines (tasks/tabular/baseline.py)
    choice: MitigationChoice | None = None  # every candidate's validation scores, the rule's pick and why


@dataclass(frozen=True)
class TabularAudit:
    """The audit report plus the arrays the report's plots need."""

    report: dict[str, Any]
    y_true: np.ndarray
    y_score: np.ndarray
    y_pred: np.ndarray
    sensitive: pd.DataFrame

    @property
    def metrics(self) -> dict[str, Any]:
        """Overall accuracy etc. of the exported graph, for metrics.json."""
        return {"exported": self.report["overall"]}

"""What a recommendation fit produces: one ``ModelReport`` per algorithm compared, and
``RecommendFitResult`` (the shipped scorer, the split, the comparison and the re-ranking curve)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from scipy import sparse

from aiforge.audit.baseline import BaselineReport
from aiforge.tasks.recommend.data import Interactions, Split
from aiforge.tasks.recommend.evaluate import Trial
from aiforge.tasks.recommend.metrics import RankingMetrics
from aiforge.tasks.recommend.scoring import ScoringParts

__all__ = ["ModelReport", "RecommendFitResult"]


@dataclass(frozen=True)
class ModelReport:
    """One algorithm: its tuned parameters, validation trials and test metrics."""

    algorithm: str
    params: dict[str, Any]
    trials: list[Trial]
    test: RankingMetrics
    fit_seconds: float


@dataclass
class RecommendFitResult:
    """What ``fit`` produced: the shipped model's parts and every model's report."""

    data: Interactions
    split: Split
    parts: ScoringParts
    algorithm: str
    reports: dict[str, ModelReport]
    curve: list[dict[str, Any]]
    train_seconds: float
    history: sparse.csr_matrix = field(repr=False)
    baseline: BaselineReport | None = None  # the model against its simple baselines (tasks/recommend/baseline.py)

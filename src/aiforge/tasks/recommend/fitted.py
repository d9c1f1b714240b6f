"""Recommendation: fit and compare recommenders on a per-user split, export the chosen one.

``fit`` loads and splits the interactions, embeds item text when a content model needs it,
tunes each algorithm (the shipped one and those in ``model.compare``) on the validation
split, refits it on the training split and scores it on the test split next to popularity,
then draws the re-ranking curve of the shipped model. ``export`` writes the ONNX scorer,
id maps, item metadata, histories, metrics, card and the HTML report, and registers them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from scipy import sparse

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

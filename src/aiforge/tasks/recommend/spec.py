"""RecommendSpec: the typed form of a ``task: recommendation`` aiforge.yaml (no torch here)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from aiforge.audit.gates import ReleaseGates
from aiforge.spec import BaseSpec, DataPath, Strict

__all__ = ["ALGORITHMS", "InteractionColumns", "ItemColumns", "RecommendData", "RecommendExport", "RecommendGates",
           "RecommendModel", "RecommendSpec", "RerankSpec", "SplitSpec"]


ALGORITHMS = ("popularity", "als", "bpr", "item-knn", "ease", "content", "hybrid")


Algorithm = Literal["popularity", "als", "bpr", "item-knn", "ease", "content", "hybrid"]


class InteractionColumns(Strict):
    """Column names of the interaction log; rating and timestamp are optional."""

    user: str = "user"
    item: str = "item"
    rating: str | None = None
    timestamp: str | None = None


class ItemColumns(Strict):
    """Column names of the item table; ``text`` columns are embedded for content models."""

    id: str = "item"
    title: str | None = "title"
    genres: str | None = None
    text: list[str] = Field(default_factory=list)
    genre_separator: str = "|"


class RecommendData(Strict):
    """Where the interactions (and optionally item metadata) come from."""

    interactions: DataPath | None = None
    items: DataPath | None = None
    sample: Literal["movielens"] | None = None
    format: Literal["auto", "csv", "jsonl", "parquet"] = "auto"
    columns: InteractionColumns = InteractionColumns()
    item_columns: ItemColumns = ItemColumns()
    positive_threshold: float | None = Field(default=None, description="rating >= this is a positive")
    max_users: int | None = Field(default=None, gt=1, description="keep only the first N users (a slice)")
    on_duplicate: Literal["error", "keep-last"] = "error"

    @model_validator(mode="after")
    def _one_source(self) -> RecommendData:
        if (self.interactions is None) == (self.sample is None):
            raise ValueError("give exactly one of data.interactions (a file) or data.sample (e.g. movielens)")
        return self


class SplitSpec(Strict):
    """Per-user holdout: ``random`` (seeded) or ``time`` (each user's latest interactions)."""

    kind: Literal["random", "time"] = "random"
    test_fraction: float = Field(default=0.2, gt=0, lt=0.9)
    validation_fraction: float = Field(default=0.2, gt=0, lt=0.9)
    min_user_positives: int = Field(default=2, ge=2)
    seed: int = 0


def _popularity_only() -> list[Algorithm]:
    return ["popularity"]


class RecommendModel(Strict):
    """The algorithm to ship, its hyper-parameter grid and what to compare it with."""

    algorithm: Algorithm = "hybrid"
    search: bool = True
    grid: dict[str, list[float | int | str]] = Field(default_factory=dict)
    params: dict[str, float | int | str] = Field(default_factory=dict)
    compare: list[Algorithm] = Field(default_factory=_popularity_only)
    k: int = Field(default=10, gt=0, le=1000)
    min_item_positives: int = Field(default=2, ge=1, description="catalogue of item-item models")
    threads: int | None = Field(default=None, gt=0)
    backbone: str = "minilm-l6"


class RerankSpec(Strict):
    """Popularity-penalised re-ranking: score/max|score| - penalty * log-popularity share."""

    popularity_penalty: float = Field(default=0.0, ge=0, le=10)
    curve: list[float] = Field(default_factory=lambda: [0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8])


class RecommendExport(Strict):
    """How the bundle scores: the exact ONNX graph, or a faiss index for big factor catalogues."""

    index: Literal["auto", "exact", "faiss"] = "auto"
    faiss_min_items: int = Field(default=200_000, gt=0)
    parity_users: int = Field(default=200, gt=0)


class RecommendGates(ReleaseGates):
    """Release gates ``aiforge ship`` checks on a recommender, at the spec's ``model.k``; unset ones are skipped."""

    kind: ClassVar[str] = "recommendation"
    settings: ClassVar[frozenset[str]] = frozenset({"item_groups"})

    min_ndcg_at_k: float | None = Field(default=None, ge=0, le=1)
    min_recall_at_k: float | None = Field(default=None, ge=0, le=1)
    min_precision_at_k: float | None = Field(default=None, ge=0, le=1)
    min_map_at_k: float | None = Field(default=None, ge=0, le=1)
    min_hit_rate_at_k: float | None = Field(default=None, ge=0, le=1)
    min_coverage: float | None = Field(default=None, ge=0, le=1)
    # exposure by item group (per entry of ``item_groups``), bootstrapped over users
    max_exposure_share_difference: float | None = Field(default=None, ge=0, le=1)
    min_exposure_ratio: float | None = Field(default=None, ge=0)
    min_exposure_share: float | None = Field(default=None, ge=0, le=1)
    # settings: the item groupings the exposure gates run over ("popularity_bucket": head/middle/tail by training
    # positives, or an item-level column of data.items or of the --data file, e.g. a provider)
    item_groups: list[str] = Field(default_factory=lambda: ["popularity_bucket"], min_length=1)


class RecommendSpec(BaseSpec):
    """A recommendation application: interactions, split, algorithm, re-ranking, export, serving."""

    task: Literal["recommendation"] = "recommendation"
    data: RecommendData
    split: SplitSpec = SplitSpec()
    model: RecommendModel = RecommendModel()
    rerank: RerankSpec = RerankSpec()
    export: RecommendExport = RecommendExport()
    gates: RecommendGates = RecommendGates()

"""TextSpec: the ``aiforge.yaml`` of a text-classification app (data, backbone, training, export)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import (
    Field,
    model_validator,
)

from aiforge.audit.gates import GroupGates
from aiforge.spec import BaseSpec, DataPath, Strict

__all__ = ["MARGIN_OBJECTIVES", "AppSpec", "DataSpec", "ModelSpec", "OptimizeSpec", "OutOfScopeSpec", "TextGates",
           "TextSpec", "TrainSpec"]


class DataSpec(Strict):
    """Where the examples are and which columns hold text and label."""

    train: DataPath
    test: DataPath | None = None
    validation: DataPath | None = None
    format: Literal["auto", "csv", "jsonl", "parquet"] = "auto"
    text_column: str = "text"
    label_column: str = "label"
    validation_fraction: float = Field(default=0.1, gt=0.0, lt=0.5)
    max_per_label: int | None = Field(default=None, gt=1)  # training rows kept per label (seeded), all if None
    max_test_per_label: int | None = Field(default=None, gt=0)  # test rows kept per label (seeded), all if None
    # group columns for the per-group audit and gates; with them and no test file, a test split
    # (stratified by label and group, seeded) is held out of train
    sensitive_features: list[str] | None = None
    test_fraction: float = Field(default=0.2, gt=0.0, lt=0.5)


class OutOfScopeSpec(Strict):
    """Out-of-scope texts: too unsure (or too far from every trained label), they get the ``name`` label instead."""

    label: str | None = Field(default=None, description="Label of your out-of-scope examples in the data; they are "
                                                        "not a class: they calibrate the threshold and are scored.")
    name: str = Field(default="out_of_scope", min_length=1, description="The label served for out-of-scope texts.")
    method: Literal["probability", "distance", "nearest"] = Field(
        default="probability", description="Score: the classifier's top probability (default), the Mahalanobis "
                                           "distance of the pooled features to the nearest label mean, or "
                                           "(nearest) one minus their cosine to the nearest training example.")
    threshold: float | None = Field(default=None, gt=0, description="Fixed threshold (a minimum top probability, "
                                                                    "or a maximum distance); None = calibrate.")
    synthetic_outliers: float = Field(
        default=0.0, ge=0, le=1, description="With objective margin: texts spliced from halves of two labels' "
                                             "examples, this share of the training rows, trained as one extra "
                                             "class that is never served (outlier exposure without outside data).")
    target_in_scope_recall: float = Field(default=0.97, gt=0, le=1,
                                          description="Share of validation in-scope texts the threshold keeps.")

MARGIN_OBJECTIVES = ("margin", "margin-contrastive")  # the objectives that train a margin (cosine) head


class ModelSpec(Strict):
    """Which pre-trained backbone and how to adapt it."""

    backbone: str = "minilm-l6"
    mode: Literal["head", "full"] = "head"
    head: Literal["linear", "mlp"] = "linear"
    max_length: int = Field(default=64, ge=8, le=512)
    # margin: a cosine head with an additive margin (LMCL / CosFace): compact, separated classes, so an
    # unknown intent lands far from all of them (tasks/text/margin.py); the head is then always cosine
    # margin-contrastive: the margin head plus supervised contrastive loss on the pooled features, in batches
    # of 4 examples of each of a few labels (mode full only; bench/intents_oos.py recipe lmcl_supcon)
    objective: Literal["cross-entropy", "margin", "margin-contrastive"] = "cross-entropy"
    margin: float = Field(default=0.35, ge=0, lt=1)
    contrastive_weight: float = Field(default=1.0, gt=0, description="With objective margin-contrastive: weight "
                                      "of the supervised contrastive term.")
    contrastive_temperature: float = Field(default=0.1, gt=0, le=1)
    out_of_scope: OutOfScopeSpec | None = None

    @model_validator(mode="after")
    def _outliers_need_margin(self) -> ModelSpec:
        if self.out_of_scope is not None and self.out_of_scope.synthetic_outliers and self.objective != "margin":
            raise ValueError("model.out_of_scope.synthetic_outliers trains an extra class of the margin head: "
                             "set model.objective: margin, or synthetic_outliers: 0")
        if self.objective == "margin-contrastive" and self.mode != "full":
            raise ValueError("model.objective margin-contrastive shapes the encoder's features: set model.mode: full")
        return self


class TrainSpec(Strict):
    """Optimiser and schedule; defaults suit the chosen mode."""

    seed: int = 0
    epochs: int | None = Field(default=None, gt=0)
    batch_size: int | None = Field(default=None, gt=0)
    lr: float | None = Field(default=None, gt=0)
    head_lr: float | None = Field(default=None, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1)
    label_smoothing: float | None = Field(default=None, ge=0, lt=1)
    patience: int | None = Field(default=None, ge=1)
    threads: int | None = Field(default=None, gt=0)


class OptimizeSpec(Strict):
    """Export options: int8 quantization and the parity budget it must meet."""

    quantize: bool = True
    max_prob_diff: float = Field(default=1e-4, gt=0)
    min_int8_agreement: float = Field(default=0.99, gt=0, le=1)
    parity_samples: int = Field(default=2000, gt=0)


class TextGates(GroupGates):
    """Release gates ``aiforge ship`` checks on a text bundle; unset ones are not checked.

    The per-group gaps run over ``sensitive_features`` (default: ``data.sensitive_features``).
    """

    kind: ClassVar[str] = "text-classification"


class TextSpec(BaseSpec):
    """A text-classification application: data, backbone, training, export and serving."""

    task: Literal["text-classification"] = "text-classification"
    data: DataSpec
    model: ModelSpec = ModelSpec()
    train: TrainSpec = TrainSpec()
    optimize: OptimizeSpec = OptimizeSpec()
    gates: TextGates = TextGates()

    @model_validator(mode="after")
    def _test_differs_from_train(self) -> TextSpec:
        if self.data.test is not None and self.data.test == self.data.train:
            raise ValueError("data.test must not be the same file as data.train")
        return self


# The first kind's spec kept its original name in the public API (``af.AppSpec``).
AppSpec = TextSpec

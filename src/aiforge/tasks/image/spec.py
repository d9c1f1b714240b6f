"""ImageSpec: the typed form of an image-classification ``aiforge.yaml`` (no torch here).

Without a ``data`` block the app is the pre-trained ImageNet classifier itself (zero-shot);
with one, the backbone is adapted to the user's classes in ``head`` or ``full`` mode.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from aiforge.audit.gates import GroupGates
from aiforge.spec import BaseSpec, DataPath, ServeSpec, Strict

__all__ = ["ImageAugmentSpec", "ImageDataSpec", "ImageGates", "ImageModelSpec", "ImageOptimizeSpec", "ImageServeSpec",
           "ImageSpec", "ImageTrainSpec"]


class ImageDataSpec(Strict):
    """Where the labelled images are: a folder per class, a CSV of (path, label), or IDX files."""

    train: DataPath
    train_labels: DataPath | None = None
    test: DataPath | None = None
    test_labels: DataPath | None = None
    validation: DataPath | None = None
    validation_labels: DataPath | None = None
    format: Literal["auto", "folder", "csv", "idx"] = "auto"
    path_column: str = "path"
    label_column: str = "label"
    label_names: list[str] | None = Field(default=None, min_length=2)
    validation_fraction: float = Field(default=0.1, gt=0.0, lt=0.5)
    min_per_class: int = Field(default=2, ge=1)
    max_per_class: int | None = Field(default=None, gt=1)
    max_test_per_class: int | None = Field(default=None, gt=0)
    # group columns for the per-group audit and gates. Each image's groups come from ``groups`` (a CSV, JSONL
    # or Parquet file with ``path_column`` and these columns; paths relative to that file, or bare file names),
    # else from these columns of the data CSV itself. With them and no test set, a test split (stratified by
    # label and group, seeded) is held out of train.
    sensitive_features: list[str] | None = Field(default=None, min_length=1)
    groups: DataPath | None = None
    test_fraction: float = Field(default=0.2, gt=0.0, lt=0.5)

    @model_validator(mode="after")
    def _groups_need_features(self) -> ImageDataSpec:
        if self.groups is not None and not self.sensitive_features:
            raise ValueError("data.groups needs data.sensitive_features: the columns of the groups file to audit by")
        return self


class ImageModelSpec(Strict):
    """Backbone, adaptation mode and input resolution."""

    backbone: str = "efficientnet-lite0"
    mode: Literal["zero-shot", "head", "full"] = "head"
    resolution: int = Field(default=224, ge=32, le=512)
    crop_fraction: float = Field(default=0.875, gt=0.3, le=1.0)
    head: Literal["linear", "mlp"] = "linear"
    unfreeze: Literal["all"] | int = Field(default="all", description="'all' or the number of last stages to train")
    top_k: int = Field(default=5, ge=1)

    @model_validator(mode="after")
    def _unfreeze_positive(self) -> ImageModelSpec:
        if isinstance(self.unfreeze, int) and not 1 <= self.unfreeze <= 9:
            raise ValueError("model.unfreeze must be 'all' or a number of stages from 1 to 9")
        return self


class ImageAugmentSpec(Strict):
    """Training augmentation (full mode): random resized crop, flip, colour jitter."""

    crop_scale_min: float = Field(default=0.7, gt=0.05, le=1.0)
    flip: bool = True
    jitter: float = Field(default=0.1, ge=0.0, lt=1.0)


class ImageTrainSpec(Strict):
    """Optimiser and schedule; defaults suit the chosen mode."""

    seed: int = 0
    epochs: int | None = Field(default=None, gt=0)
    head_epochs: int | None = Field(default=None, gt=0)
    batch_size: int | None = Field(default=None, gt=0)
    lr: float | None = Field(default=None, gt=0, description="backbone learning rate (last stage) in full mode")
    head_lr: float | None = Field(default=None, gt=0)
    lr_decay: float = Field(default=0.7, gt=0, le=1, description="each earlier stage's lr = later stage's x this")
    weight_decay: float = Field(default=0.01, ge=0)
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1)
    label_smoothing: float = Field(default=0.1, ge=0, lt=1)
    patience: int | None = Field(default=None, ge=1)
    threads: int | None = Field(default=None, gt=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    augment: ImageAugmentSpec = ImageAugmentSpec()


class ImageOptimizeSpec(Strict):
    """Export: int8 static quantization calibrated on training images, and its parity gate."""

    quantize: bool = True
    max_prob_diff: float = Field(default=1e-4, gt=0)
    min_int8_agreement: float = Field(default=0.99, gt=0, le=1)
    parity_samples: int = Field(default=1000, gt=0)
    calibration_samples: int = Field(default=256, gt=0)
    int8_fallback: bool = Field(default=True, description="re-run items int8 is unsure about (top-1 margin under "
                                                          "a threshold) through the fp32 graph")
    fallback_agreement: float = Field(default=0.998, gt=0, le=1, description="guarded int8 top-1 agreement with "
                                      "fp32 that the margin threshold must reach on the tuning images")
    max_fallback_rate: float = Field(default=0.25, ge=0, le=1, description="refuse a recipe that would re-run "
                                     "more than this share of the tuning images in fp32")
    tuning_samples: int = Field(default=2000, gt=0, description="held-out images that choose the threshold "
                                "(validation, topped up with training images calibration did not use)")


class ImageReportSpec(Strict):
    """The HTML evaluation report: confident mistakes and Grad-CAM heat maps."""

    enabled: bool = True
    mistakes: int = Field(default=16, ge=0, le=200)
    gradcam: int = Field(default=8, ge=0, le=100)


class ImageServeSpec(ServeSpec):
    """Serving settings, with limits that suit images (photos are larger than JSON texts)."""

    max_body_bytes: int = Field(default=16 << 20, gt=0)
    max_image_bytes: int = Field(default=8 << 20, gt=0)
    max_image_pixels: int = Field(default=40_000_000, gt=0)


class ImageGates(GroupGates):
    """Release gates ``aiforge ship`` checks on an image bundle; unset ones are not checked.

    The per-group gaps run over ``sensitive_features`` (default: ``data.sensitive_features``, measured on the
    spec's test split); with ``--data`` they are columns of that (path, label, ...) CSV.
    """

    kind: ClassVar[str] = "image-classification"


class ImageSpec(BaseSpec):
    """An image-classification application."""

    task: Literal["image-classification"] = "image-classification"
    data: ImageDataSpec | None = None
    model: ImageModelSpec = ImageModelSpec()
    train: ImageTrainSpec = ImageTrainSpec()
    optimize: ImageOptimizeSpec = ImageOptimizeSpec()
    report: ImageReportSpec = ImageReportSpec()
    serve: ImageServeSpec = ImageServeSpec()
    gates: ImageGates = ImageGates()

    @model_validator(mode="before")
    @classmethod
    def _zero_shot_without_data(cls, raw: Any) -> Any:
        # Without data the app is the ImageNet classifier: say so in the spec itself, so that a
        # dumped spec (mode written out) validates again as the same app.
        if isinstance(raw, dict) and raw.get("data") is None and isinstance(raw.get("model", {}), dict):
            model = raw.get("model", {})
            if "mode" not in model:
                return {**raw, "model": {**model, "mode": "zero-shot"}}
        return raw

    @model_validator(mode="after")
    def _mode_matches_data(self) -> ImageSpec:
        if self.data is None and self.model.mode != "zero-shot" and "mode" in self.model.model_fields_set:
            raise ValueError(f"model.mode {self.model.mode!r} needs a data block; without data the app is "
                             "the pre-trained ImageNet classifier (mode: zero-shot)")
        if self.data is not None and self.model.mode == "zero-shot":
            raise ValueError("model.mode 'zero-shot' takes no data block; use mode head or full to train on it")
        if self.data is not None and self.data.test is not None and self.data.test == self.data.train:
            raise ValueError("data.test must not be the same as data.train")
        return self

    @property
    def effective_mode(self) -> str:
        """``zero-shot`` when there is no data, else the configured mode."""
        return "zero-shot" if self.data is None else self.model.mode

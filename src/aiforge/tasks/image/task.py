"""Image classification on a pre-trained EfficientNet-Lite0.

Three modes:
- ``zero-shot`` (no data): the ImageNet classifier as it is, 1000 classes.
- ``head``: the backbone is frozen; pooled features are computed once (no augmentation) and a
  head is trained on them with the shared loop. Minutes on a CPU.
- ``full``: the head is trained first as in ``head`` (linear probe), then the last
  ``model.unfreeze`` stages (or all) are fine-tuned with augmentation and discriminative
  learning rates (each earlier stage gets ``train.lr_decay`` x the next one's rate), the
  shared loop's AdamW, warm-up and early stopping on validation macro-F1.
"""

from __future__ import annotations

import os
import time
from functools import partial
from typing import TYPE_CHECKING

import torch

from aiforge.audit.metrics import classification_metrics
from aiforge.bundle.parts import ExportResult, export_bundle
from aiforge.bundle.registry import Registry
from aiforge.errors import SpecError
from aiforge.hub.catalog import get_backbone
from aiforge.spec import BaseSpec
from aiforge.tables import baseline_summary, metrics_table, per_class_table
from aiforge.tasks.base import check_spec, parity_line
from aiforge.tasks.image.baseline import image_baselines
from aiforge.tasks.image.data import load_image_splits
from aiforge.tasks.image.export import write_image_bundle
from aiforge.tasks.image.fitted import FittedImageClassifier, ImageFitResult
from aiforge.tasks.image.model import ImageClassifier, imagenet_head, imagenet_labels, load_efficientnet, make_head
from aiforge.tasks.image.preprocess import AugmentConfig, ImageConfig
from aiforge.tasks.image.spec import ImageSpec
from aiforge.tasks.image.training import FullConfig, HeadConfig, extract_features, fit_full, fit_head, pick_device
from aiforge.train.loop import seed_everything

if TYPE_CHECKING:
    from rich.console import RenderableType

__all__ = ["ImageClassificationTask"]


def _configs(spec: ImageSpec) -> tuple[HeadConfig, FullConfig]:
    """Training settings with mode-dependent defaults filled in."""
    t, full = spec.train, spec.model.mode == "full"
    head = HeadConfig(epochs=t.head_epochs or (t.epochs if (t.epochs and not full) else (10 if full else 30)),
                      lr=t.head_lr or 3e-3, patience=t.patience or 5, label_smoothing=t.label_smoothing,
                      seed=t.seed)
    aug = AugmentConfig(crop_scale_min=t.augment.crop_scale_min, flip=t.augment.flip, jitter=t.augment.jitter)
    unfreeze = None if spec.model.unfreeze == "all" else int(spec.model.unfreeze)
    fine = FullConfig(epochs=t.epochs or 5, batch_size=t.batch_size or 64, lr=t.lr or 5e-4,
                      head_lr=(t.head_lr or 3e-3) / 3, lr_decay=t.lr_decay, unfreeze=unfreeze,
                      weight_decay=t.weight_decay, warmup_ratio=t.warmup_ratio, label_smoothing=t.label_smoothing,
                      patience=t.patience or 2, seed=t.seed, augment=aug)
    return head, fine


class ImageClassificationTask:
    """Fit an image classifier as the spec says."""

    name = "image-classification"

    def fit(self, spec: BaseSpec, *, progress: bool = True) -> ImageFitResult:
        """Load and check images, adapt the backbone, score on validation and test.

        Raises:
            DataError: a data check failed (names the file).
            BackboneError: the backbone is unknown or its package is missing.
        """
        spec = check_spec(spec, ImageSpec)
        seed_everything(spec.train.seed)
        try:
            device = pick_device(spec.train.device)
        except ValueError as exc:
            raise SpecError(str(exc)) from None
        if device.type == "cpu":
            torch.set_num_threads(spec.train.threads or os.cpu_count() or 1)
        backbone = get_backbone(spec.model.backbone)
        if backbone.kind != "image-classifier":
            raise SpecError(f"model.backbone {backbone.name!r} is a {backbone.kind}, not an image classifier.")
        image = ImageConfig.for_resolution(spec.model.resolution, crop_fraction=spec.model.crop_fraction)
        net = load_efficientnet(backbone, spec.model.resolution)
        if spec.effective_mode == "zero-shot":
            model = ImageClassifier(net, imagenet_head(net)).to(device).eval()
            fitted = FittedImageClassifier(model, labels=imagenet_labels(), image=image, backbone=backbone,
                                           spec=spec, device=device)
            return ImageFitResult(fitted, None, None, None, 0.0)
        assert spec.data is not None
        splits = load_image_splits(spec.data, seed=spec.train.seed)
        labels = splits.labels
        index = {y: i for i, y in enumerate(labels)}
        y_train = torch.tensor([index[y] for y in splits.train.labels])
        y_val = [index[y] for y in splits.validation.labels]
        model = ImageClassifier(net, make_head(spec.model.head, backbone.dim, len(labels))).to(device)
        head_cfg, full_cfg = _configs(spec)
        start = time.perf_counter()
        feats = {part: extract_features(model, getattr(splits, part), image, progress=progress,
                                        description=f"features ({part})") for part in ("train", "validation")}
        history = fit_head(model, feats["train"], y_train, feats["validation"], y_val, head_cfg,
                           progress=progress).history
        if spec.model.mode == "full":
            history += fit_full(model, splits.train, y_train, splits.validation, y_val, image, full_cfg,
                                n_classes=len(labels), progress=progress).history
        train_seconds = time.perf_counter() - start
        fitted = FittedImageClassifier(model.eval(), labels=labels, image=image, backbone=backbone, spec=spec,
                                       device=device)
        validation = fitted.evaluate(splits.validation)
        test, test_scores = None, None
        if splits.test is not None:
            proba = fitted.predict_proba(splits.test)
            test = classification_metrics(splits.test.labels, proba, labels)
            test_scores = (proba.argmax(axis=1) == [index[y] for y in splits.test.labels]).astype(float)
        baseline = image_baselines(splits, model_validation=validation.accuracy,
                                   model_test=test.accuracy if test else None, model_test_scores=test_scores,
                                   fit_seconds=train_seconds, seed=spec.train.seed, enabled=spec.baseline)
        return ImageFitResult(fitted, splits, validation, test, train_seconds, history, baseline)

    def export(self, spec: BaseSpec, result: ImageFitResult, registry: Registry) -> ExportResult:
        """Export to ONNX (fp32 + gated static int8), check parity, write report, metrics and card, register.

        Raises:
            ExportError: export failed or fp32 parity did not hold.
        """

        spec = check_spec(spec, ImageSpec)
        return export_bundle(registry, spec, partial(write_image_bundle, spec=spec, result=result))

    def summarize(self, result: ImageFitResult, exported: ExportResult) -> list[RenderableType]:
        """Metrics table, hardest classes and the parity line, for ``aiforge train``."""
        parity = parity_line(exported.parity, " (static)")
        if result.validation is None:
            return [f"{exported.record.name}: pre-trained ImageNet classifier (zero-shot, "
                    f"{len(result.fitted.labels)} classes, {result.fitted.image.resolution} px)", parity]
        test = result.test.to_dict() if result.test else None
        return [metrics_table(f"{exported.record.name}: trained in {result.train_seconds:.0f} s "
                              f"at {result.fitted.image.resolution} px",
                              {"validation": result.validation.to_dict(), "test": test}),
                per_class_table(test or result.validation.to_dict()), *baseline_summary(result.baseline), parity]

"""What an image fit produces: the fitted classifier (predict, evaluate) and ``ImageFitResult``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from aiforge.audit.baseline import BaselineReport
from aiforge.audit.metrics import Metrics, classification_metrics
from aiforge.errors import InputError
from aiforge.hub.catalog import Backbone
from aiforge.tasks.image.data import ImageSplits
from aiforge.tasks.image.dataset import ImageDataset
from aiforge.tasks.image.model import ImageClassifier
from aiforge.tasks.image.preprocess import ImageConfig, preprocess_batch
from aiforge.tasks.image.spec import ImageSpec

__all__ = ["FittedImageClassifier", "ImageFitResult"]


@dataclass
class ImageFitResult:
    """Everything a fit produced: the model, its scores, and how long it took."""

    fitted: FittedImageClassifier
    splits: ImageSplits | None
    validation: Metrics | None
    test: Metrics | None
    train_seconds: float
    history: list[dict[str, float | str]] = field(default_factory=list)
    baseline: BaselineReport | None = None  # the model against its simple baselines (tasks/image/baseline.py)


class FittedImageClassifier:
    """A trained (or zero-shot) image classifier that predicts and evaluates in PyTorch (export.py exports it)."""

    def __init__(self, model: ImageClassifier, *, labels: list[str], image: ImageConfig, backbone: Backbone,
                 spec: ImageSpec, device: torch.device) -> None:
        self.model = model.eval()
        self.labels = labels
        self.image = image
        self.backbone = backbone
        self.spec = spec
        self.device = device

    @torch.inference_mode()
    def predict_proba(self, images: ImageDataset | list[Any], *, batch_size: int = 128) -> np.ndarray:
        """Class probabilities, one row per image (Pillow images or an :class:`ImageDataset`).

        Raises:
            InputError: an item is not a Pillow image.
        """
        ds = images if isinstance(images, ImageDataset) else _as_dataset(images)
        out = np.zeros((len(ds), len(self.labels)), dtype=np.float32)
        for start in range(0, len(ds), batch_size):
            stop = min(start + batch_size, len(ds))
            x = torch.from_numpy(preprocess_batch([ds.image(i) for i in range(start, stop)], self.image))
            out[start:stop] = torch.softmax(self.model(x.to(self.device)), dim=-1).float().cpu().numpy()
        return out

    def predict(self, items: list[Any]) -> list[dict[str, Any]]:
        """Label, its probability and the top-5 probabilities for each image."""
        probs = self.predict_proba(items)
        out = []
        for p in probs:
            order = np.argsort(-p)[:5]
            out.append({"label": self.labels[int(order[0])], "score": float(p[order[0]]),
                        "scores": {self.labels[int(i)]: float(p[i]) for i in order}})
        return out

    def evaluate(self, dataset: ImageDataset) -> Metrics:
        """Metrics of this model on a labelled image set."""
        return classification_metrics(dataset.labels, self.predict_proba(dataset), self.labels)


def _as_dataset(images: list[Any]) -> ImageDataset:
    from PIL import Image

    if not all(isinstance(i, Image.Image) for i in images):
        raise InputError("predict() takes a list of Pillow images.")
    return ImageDataset(list(images), ["?"] * len(images), "<memory>")


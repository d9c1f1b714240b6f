"""The image baselines: majority class, a linear (ridge) classifier and 3-nearest neighbours on raw pixels.

Cheap by construction: at most ``MAX_TRAIN`` training images (a stratified seeded sample), at most
``MAX_SIDE`` x ``MAX_SIDE`` grayscale pixels (area-averaged from the images the fit already decoded,
never re-read from disk), and solvers whose cost is bounded (closed-form ridge on standardized pixels,
brute-force neighbours over the sample; a linear SVM was measured 5-10x slower than both together on
Fashion-MNIST for +0.02 accuracy, so it is not among them). The skeleton (choice on validation, paired comparison on
the same test images as the model) is :func:`aiforge.audit.baseline.classifier_baselines`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image
from sklearn.linear_model import RidgeClassifier
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from aiforge.audit.baseline import BaselineReport, classifier_baselines
from aiforge.tasks.image.data import ImageSplits
from aiforge.tasks.image.dataset import ImageDataset

__all__ = ["HINT", "MAX_SIDE", "MAX_TRAIN", "image_baselines", "pixels"]

MAX_SIDE = 16  # the raw-pixel baselines see at most 16 x 16 grayscale
MAX_TRAIN = 3_000  # training images the pixel baselines are fitted on (stratified seeded sample above that)
HINT = ("try model.mode: full (fine-tune the backbone) or a higher model.resolution; a pre-trained network "
        "at low resolution can lose to raw pixels on small, simple images")
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # Pillow's "L" conversion


def _side(ds: ImageDataset) -> int:
    first = ds.image(0)
    return max(1, min(MAX_SIDE, first.width, first.height))


def pixels(ds: ImageDataset, side: int, indices: np.ndarray | None = None) -> np.ndarray:
    """Grayscale pixels in [0, 1], area-averaged to ``side`` x ``side``, one flattened row per image.

    Raw arrays (IDX data) are downscaled in one batch; decoded Pillow images one by one.
    """
    idx = np.arange(len(ds)) if indices is None else indices
    raw = ds.images
    if isinstance(raw, np.ndarray) and raw.ndim in (3, 4):
        gray = raw[idx].astype(np.float32) / 255.0
        if gray.ndim == 4:
            gray = gray[..., :3] @ _LUMA
        pooled = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(gray)[:, None], (side, side))
        out: np.ndarray = pooled.reshape(len(idx), side * side).numpy()
        return out
    rows = np.empty((len(idx), side * side), dtype=np.float32)
    for row, i in enumerate(idx):
        img = ds.image(int(i)).convert("L")
        if img.size != (side, side):
            img = img.resize((side, side), Image.Resampling.BOX)
        rows[row] = np.asarray(img, dtype=np.float32).reshape(-1) / 255.0
    return rows


def image_baselines(splits: ImageSplits, *, model_validation: float, model_test: float | None,
                    model_test_scores: np.ndarray | None, fit_seconds: float, seed: int,
                    enabled: bool = True) -> BaselineReport:
    """Majority class, a ridge classifier and 3-nearest neighbours on raw pixels against the model (accuracy)."""
    parts = {"train": splits.train, "validation": splits.validation, "test": splits.test}
    side = _side(splits.train) if enabled else MAX_SIDE

    def features(split: str, indices: np.ndarray | None) -> np.ndarray:
        data = parts[split]
        assert data is not None
        return pixels(data, side, indices)

    on = f"on {side}x{side} gray pixels"
    estimators: list[tuple[str, Any]] = [
        (f"linear (ridge) classifier {on}", make_pipeline(StandardScaler(), RidgeClassifier(alpha=1.0))),
        (f"3-nearest neighbours {on}", KNeighborsClassifier(n_neighbors=3, algorithm="brute")),
    ]
    test = splits.test
    return classifier_baselines(estimators=estimators, features=features, train_labels=splits.train.labels,
                                validation_labels=splits.validation.labels,
                                test_labels=test.labels if test is not None else None, max_train=MAX_TRAIN,
                                model_validation=model_validation, model_test=model_test,
                                model_test_scores=model_test_scores, fit_seconds=fit_seconds, hint=HINT,
                                seed=seed, enabled=enabled)

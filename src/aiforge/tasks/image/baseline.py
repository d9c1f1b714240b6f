"""The image baselines: majority class, and logistic regression / linear SVM on downscaled grayscale pixels.

Fitted on (a seeded sample of) the training split, chosen on validation, scored on the same test
images as the model. Pixels are at most 32 x 32 grayscale, so the baselines take seconds.
"""

from __future__ import annotations

import time

import numpy as np
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from aiforge.audit.baseline import (
    BaselineReport,
    compare_with_baselines,
    majority_baseline,
    scored_baseline,
    skipped_report,
    subsample,
)
from aiforge.tasks.image.data import ImageSplits
from aiforge.tasks.image.dataset import ImageDataset

__all__ = ["HINT", "MAX_SIDE", "MAX_TRAIN", "image_baselines", "pixels"]

MAX_SIDE = 32  # the raw-pixel baselines see at most 32 x 32 grayscale
MAX_TRAIN = 10_000  # training images the pixel baselines are fitted on (seeded sample above that)
HINT = ("try model.mode: full (fine-tune the backbone) or a higher model.resolution; a pre-trained network "
        "at low resolution can lose to raw pixels on small, simple images")


def _side(ds: ImageDataset) -> int:
    first = ds.image(0)
    return max(1, min(MAX_SIDE, first.width, first.height))


def pixels(ds: ImageDataset, side: int, indices: np.ndarray | None = None) -> np.ndarray:
    """Grayscale pixels in [0, 1], resized to ``side`` x ``side``, one flattened row per image."""
    idx = np.arange(len(ds)) if indices is None else indices
    raw = ds.images
    if isinstance(raw, np.ndarray) and raw.ndim == 3 and raw.shape[1] == raw.shape[2] == side:
        return raw[idx].reshape(len(idx), -1).astype(np.float32) / 255.0
    out = np.empty((len(idx), side * side), dtype=np.float32)
    for row, i in enumerate(idx):
        img = ds.image(int(i)).convert("L")
        if img.size != (side, side):
            img = img.resize((side, side), Image.Resampling.BILINEAR)
        out[row] = np.asarray(img, dtype=np.float32).reshape(-1) / 255.0
    return out


def image_baselines(splits: ImageSplits, *, model_validation: float, model_test: float | None,
                    model_test_scores: np.ndarray | None, fit_seconds: float, seed: int,
                    enabled: bool = True) -> BaselineReport:
    """Majority class, logistic regression and a linear SVM on raw pixels against the model (accuracy)."""
    if not enabled:
        return skipped_report("accuracy")
    start = time.perf_counter()
    train, val, test = splits.train, splits.validation, splits.test
    side = _side(train)
    keep = subsample(len(train), MAX_TRAIN, seed=seed)
    x_train = pixels(train, side, keep)
    y_train = np.asarray(train.labels)[keep]
    x_val = pixels(val, side)
    x_test = pixels(test, side) if test is not None else None
    y_test = test.labels if test is not None else None
    common = {"x_train": x_train, "y_train": y_train, "x_validation": x_val, "y_validation": val.labels,
              "x_test": x_test, "y_test": y_test}
    candidates = [
        majority_baseline(y_train.tolist(), val.labels, y_test),
        scored_baseline(f"logistic regression on {side}x{side} gray pixels",
                        make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=200)), **common),
        scored_baseline(f"linear SVM on {side}x{side} gray pixels",
                        make_pipeline(StandardScaler(), LinearSVC(C=0.01, max_iter=500, random_state=seed)),
                        **common),
    ]
    return compare_with_baselines(metric="accuracy", candidates=candidates, model_validation=model_validation,
                                  model_test=model_test, model_test_scores=model_test_scores,
                                  fit_seconds=fit_seconds, hint=HINT, seed=seed,
                                  seconds=time.perf_counter() - start)

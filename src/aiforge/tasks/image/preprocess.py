"""The one image preprocessing implementation, used by training, export checks and the Runtime.

Pillow + numpy only (no torch), so the torch-free Runtime computes exactly the numbers the
model saw in training: resize the shorter side to ``resize`` (bilinear), centre-crop a
``resolution`` square, scale 0..255 to ``(x - mean) / std`` (EfficientNet-Lite: [-1, 1]),
channels first. Grayscale, palette and alpha images become RGB first (alpha composited on
white). The resized size is bounded before any resize: an image more than ``MAX_ASPECT_RATIO``
times longer than it is wide (a 177-byte 100000x1 PNG would resize to 25.6 million x 256 pixels)
is refused with :class:`~aiforge.errors.InputError`. Training augmentation (random resized crop,
flip, colour jitter) lives here too, so an augmented image ends in the same scaling step.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance

from aiforge.errors import InputError

__all__ = ["MAX_ASPECT_RATIO", "AugmentConfig", "ImageConfig", "augment", "check_aspect", "preprocess",
           "preprocess_batch", "resized_size", "to_rgb"]


MAX_ASPECT_RATIO = 20
"""Longest side over shortest side an image may have (tall phone screenshots are about 10:1).

Resizing the shorter side to ``resize`` makes the longer one up to ``MAX_ASPECT_RATIO * resize``
pixels, so this bounds the resized image to ``MAX_ASPECT_RATIO * resize**2`` pixels."""


@dataclass(frozen=True)
class ImageConfig:
    """How an image becomes the model's input tensor; written to ``pipeline.json``."""

    resolution: int = 224
    resize: int = 256
    mean: float = 127.5
    std: float = 127.5
    interpolation: str = "bilinear"

    @classmethod
    def for_resolution(cls, resolution: int, *, crop_fraction: float = 0.875) -> ImageConfig:
        """The config for a ``resolution`` input with ``crop_fraction`` of the resized image kept."""
        return cls(resolution=resolution, resize=max(resolution, round(resolution / crop_fraction)))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ImageConfig:
        """Read the ``image`` block of ``pipeline.json``."""
        return cls(resolution=int(raw["resolution"]), resize=int(raw["resize"]), mean=float(raw["mean"]),
                   std=float(raw["std"]), interpolation=str(raw.get("interpolation", "bilinear")))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation: random resized crop, horizontal flip, small colour jitter."""

    crop_scale_min: float = 0.7
    flip: bool = True
    jitter: float = 0.1


def to_rgb(img: Image.Image) -> Image.Image:
    """An RGB copy of ``img``: grayscale is repeated, palette and alpha composited on white."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grayscale PNG: scale to 8 bits
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        return Image.fromarray((arr / top * 255).round().astype(np.uint8), "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return img.convert("RGB")


def _resample(cfg: ImageConfig) -> Image.Resampling:
    return Image.Resampling.BICUBIC if cfg.interpolation == "bicubic" else Image.Resampling.BILINEAR


def _scale(img: Image.Image, cfg: ImageConfig) -> np.ndarray:
    arr = np.asarray(img, dtype=np.float32)
    return np.ascontiguousarray(((arr - cfg.mean) / cfg.std).transpose(2, 0, 1))


def check_aspect(width: int, height: int, *, where: str) -> None:
    """Refuse an image whose sides differ by more than :data:`MAX_ASPECT_RATIO` times.

    Raises:
        InputError: names ``where``, the size and the limit.
    """
    long, short = max(width, height), min(width, height)
    if short <= 0 or long > MAX_ASPECT_RATIO * short:
        raise InputError(f"{where}: image of {width}x{height} has an aspect ratio over the limit of "
                         f"{MAX_ASPECT_RATIO}:1; crop or pad it closer to square")


def resized_size(width: int, height: int, cfg: ImageConfig, *, where: str = "image") -> tuple[int, int]:
    """The (width, height) ``preprocess`` resizes to before its centre crop, checked before any resize.

    Raises:
        InputError: the aspect ratio is over :data:`MAX_ASPECT_RATIO` (see :func:`check_aspect`).
    """
    check_aspect(width, height, where=where)
    scale = cfg.resize / min(width, height)
    return max(cfg.resolution, round(width * scale)), max(cfg.resolution, round(height * scale))


def preprocess(img: Image.Image, cfg: ImageConfig, *, where: str = "image") -> np.ndarray:
    """``img`` as a float32 array of shape (3, resolution, resolution), as the model takes it.

    Raises:
        InputError: the image's aspect ratio is over :data:`MAX_ASPECT_RATIO`.
    """
    w, h = img.size
    nw, nh = resized_size(w, h, cfg, where=where)  # before to_rgb: no copy of a refused image
    img = to_rgb(img)
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), _resample(cfg))
    left, top = (nw - cfg.resolution) // 2, (nh - cfg.resolution) // 2
    img = img.crop((left, top, left + cfg.resolution, top + cfg.resolution))
    return _scale(img, cfg)


def preprocess_batch(images: list[Image.Image], cfg: ImageConfig) -> np.ndarray:
    """``preprocess`` for each image, stacked to (n, 3, resolution, resolution)."""
    out = np.empty((len(images), 3, cfg.resolution, cfg.resolution), dtype=np.float32)
    for i, img in enumerate(images):
        out[i] = preprocess(img, cfg)
    return out


def augment(img: Image.Image, cfg: ImageConfig, aug: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """A randomly cropped, flipped and jittered view of ``img``, scaled like ``preprocess``."""
    img = to_rgb(img)
    w, h = img.size
    area = w * h
    for _ in range(10):  # random resized crop, aspect ratio in [3/4, 4/3]
        target = area * rng.uniform(aug.crop_scale_min, 1.0)
        ratio = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
        cw, ch = round((target * ratio) ** 0.5), round((target / ratio) ** 0.5)
        if 0 < cw <= w and 0 < ch <= h:
            left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            break
    else:
        cw, ch = min(w, h), min(w, h)
        left, top = (w - cw) // 2, (h - ch) // 2
    img = img.resize((cfg.resolution, cfg.resolution), _resample(cfg), box=(left, top, left + cw, top + ch))
    if aug.flip and rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if aug.jitter > 0:
        img = ImageEnhance.Brightness(img).enhance(1 + rng.uniform(-aug.jitter, aug.jitter))
        img = ImageEnhance.Contrast(img).enhance(1 + rng.uniform(-aug.jitter, aug.jitter))
    return _scale(img, cfg)

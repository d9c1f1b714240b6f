"""Helpers for the vision tests: a real Fashion-MNIST slice as PNG folders, one trained image
bundle and one zero-shot bundle per process (cached), and image byte builders."""

from __future__ import annotations

import functools
import io
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from aiforge.tasks.image.samples import load_fashion_mnist

__all__ = ["TrainedImages", "bomb_png", "encode", "exif_rotated_png", "fashion_folders", "image_spec",
           "trained_images", "zero_shot_bundle"]

CLASSES = ["Trouser", "Bag", "Sneaker", "Dress"]
N_TRAIN, N_TEST = 16, 6
RESOLUTION = 32


def encode(arr_or_img: Any, fmt: str = "PNG", **save: Any) -> bytes:
    """An image (array or Pillow image) encoded as ``fmt`` bytes."""
    img = arr_or_img if isinstance(arr_or_img, Image.Image) else Image.fromarray(np.asarray(arr_or_img))
    buf = io.BytesIO()
    img.save(buf, format=fmt, **save)
    return buf.getvalue()


@functools.cache
def fashion_folders() -> Path:
    """``train/`` and ``test/`` folders of real Fashion-MNIST PNGs, one sub-folder per class (4 classes)."""
    root = Path(tempfile.mkdtemp(prefix="aiforge-fashion-"))
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        images, labels = load_fashion_mnist(split)
        for name in CLASSES:
            folder = root / split / name.replace("/", "-")
            folder.mkdir(parents=True)
            idx = [i for i, y in enumerate(labels) if y == name][:n]
            for k, i in enumerate(idx):
                (folder / f"{k:03d}.png").write_bytes(encode(images[i]))
    return root


def image_spec(name: str = "fashion4", **sections: dict[str, Any]) -> dict[str, Any]:
    """A head-mode spec on :func:`fashion_folders` at 32 px; ``sections`` update it."""
    root = fashion_folders()
    spec: dict[str, Any] = {
        "name": name, "task": "image-classification",
        "data": {"train": str(root / "train"), "test": str(root / "test"), "validation_fraction": 0.25},
        "model": {"mode": "head", "resolution": RESOLUTION, "crop_fraction": 1.0},
        "train": {"seed": 0, "head_epochs": 20},
        "optimize": {"parity_samples": 24, "calibration_samples": 32},
        "report": {"mistakes": 4, "gradcam": 4},
    }
    for key, value in sections.items():
        spec[key] = {**spec.get(key, {}), **value}
    return spec


@dataclass(frozen=True)
class TrainedImages:
    home: Path
    data: Path
    app: Any
    fit: Any
    export: Any


@functools.cache
def trained_images() -> TrainedImages:
    """A head-mode bundle fitted and exported once per process (read it, never modify it)."""
    from aiforge import App
    from aiforge.spec import BaseSpec

    home = Path(tempfile.mkdtemp(prefix="aiforge-vision-home-"))
    app = App(BaseSpec.from_dict(image_spec()), home=home)
    fit = app.fit(progress=False)
    return TrainedImages(home, fashion_folders(), app, fit, app.export())


@functools.cache
def zero_shot_bundle() -> tuple[Path, Path]:
    """(home, bundle path) of the pre-trained ImageNet classifier, fp32 only, exported once per process."""
    from aiforge import App
    from aiforge.spec import BaseSpec

    home = Path(tempfile.mkdtemp(prefix="aiforge-zeroshot-home-"))
    app = App(BaseSpec.from_dict({"name": "imagenet", "task": "image-classification",
                                  "optimize": {"quantize": False, "parity_samples": 8}}), home=home)
    app.fit(progress=False)
    return home, app.export().path


def bomb_png(width: int, height: int) -> bytes:
    """A valid RGB PNG of ``width`` x ``height`` black pixels, compressed to a few hundred KB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    comp = zlib.compressobj(9)
    row = b"\x00" * (1 + 3 * width)
    body = b"".join(comp.compress(row * 256) for _ in range(height // 256)) + comp.compress(row * (height % 256))
    body += comp.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def exif_rotated_png(upright: Image.Image) -> bytes:
    """``upright`` stored rotated by 90 degrees with an EXIF orientation tag (6) that undoes it."""
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # exif_transpose(6) applies ROTATE_270
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(stored, "PNG", exif=exif.tobytes())


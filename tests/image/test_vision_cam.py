"""Class-activation maps served without PyTorch: the ``cam`` output of the fp32 graph and ``explain()``.

On the shared tiny bundle (:func:`vision_helpers.trained_images`, 32 px, linear head): the map's
mean plus the head's bias is the graph's logits (so it is exactly the CAM), the map has the
image's aspect, is not constant, and its hot region follows a Bag photo pasted at the left or
the right of a black canvas.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from PIL import Image
from vision_helpers import TrainedImages, fashion_folders, trained_images

import aiforge as af
from aiforge.bundle.runtime import onnx_session
from aiforge.errors import InputError
from aiforge.tasks.image.runtime import ImageRuntime

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained() -> TrainedImages:
    return trained_images()


@pytest.fixture(scope="module")
def runtime(trained: TrainedImages) -> ImageRuntime:
    rt = af.load(trained.export.path, home=trained.home)
    assert isinstance(rt, ImageRuntime)
    return rt


def _centre_column(m: np.ndarray) -> float:
    """Where along the width the map's mass lies, 0 (left) to 1 (right)."""
    cols = np.asarray(m).sum(axis=0)
    return float((cols * np.arange(len(cols))).sum() / cols.sum() / (len(cols) - 1))


def test_the_cam_output_is_the_linear_heads_evidence_per_location(trained: TrainedImages) -> None:
    path = Path(trained.export.path)
    pipeline = json.loads((path / "pipeline.json").read_text(encoding="utf-8"))
    assert pipeline["cam"]["output"] == "cam"
    graph = onnx.load(str(path / "model.onnx"))
    bias = next(numpy_helper.to_array(i) for i in graph.graph.initializer if i.name.endswith("head.1.bias"))
    session = onnx_session(path / "model.onnx", threads=1)
    pixels = np.random.default_rng(0).normal(size=(2, 3, 96, 64)).astype(np.float32)
    probs, cam = session.run(["probabilities", "cam"], {"pixels": pixels})
    assert cam.shape == (2, 4, 3, 2)  # any input size now; stride 32
    logits = cam.mean(axis=(2, 3)) + bias
    expected = np.exp(logits - logits.max(1, keepdims=True))
    assert np.abs(expected / expected.sum(1, keepdims=True) - probs).max() < 1e-4


def test_the_map_has_the_image_aspect_and_follows_the_object(runtime: ImageRuntime) -> None:
    photos = sorted((fashion_folders() / "test" / "Bag").glob("*.png"))[:2]
    for photo in photos:
        patch = Image.open(photo).convert("RGB").resize((128, 128))
        where = []
        for x in (0, 128):
            canvas = Image.new("RGB", (256, 128))
            canvas.paste(patch, (x, 0))
            e = runtime.explain(canvas, label="Bag")
            assert e.explained == "Bag" and e.label in runtime.labels
            assert e.grid == [2, 4] and (e.width, e.height) == (256, 128)  # 2:1 like the canvas
            m = np.array(e.map)
            assert m.max() == pytest.approx(1.0) and m.std() > 0.05  # not constant
            png = Image.open(io.BytesIO(base64.b64decode(e.png.split(",", 1)[1])))
            assert png.size == (256, 128) and png.mode == "RGBA"
            where.append(_centre_column(m))
        assert where[1] - where[0] > 0.2, (photo.name, where)  # the hot region moved with the bag
    tall = runtime.explain(Image.new("RGB", (60, 180), (90, 90, 90)))
    assert tall.height > tall.width and tall.grid[0] > tall.grid[1]
    with pytest.raises(InputError, match="not one of this model's labels"):
        runtime.explain(Image.new("RGB", (64, 64)), label="Hat")

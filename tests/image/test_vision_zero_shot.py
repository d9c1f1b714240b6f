"""The pre-trained ImageNet classifier, no training: scikit-image's photos land in the top 5."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from vision_helpers import encode, zero_shot_bundle

import aiforge as af
from aiforge.tasks.image.samples import SAMPLE_PHOTOS, sample_photos

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bundle() -> tuple[Path, Path]:
    return zero_shot_bundle()


@pytest.mark.parametrize("name", [n for n, expected in SAMPLE_PHOTOS.items() if expected])
def test_known_photos_land_in_the_top_5(bundle: tuple[Path, Path], name: str) -> None:
    rt = af.load(bundle[1])
    pred = rt.predict([encode(sample_photos()[name], "JPEG", quality=92)])[0]
    top5 = [label for label, _ in sorted(pred.scores.items(), key=lambda kv: -kv[1])[:5]]
    assert any(expected in label for label in top5 for expected in SAMPLE_PHOTOS[name]), (name, top5)


def test_zero_shot_bundle_records_its_preprocessing(bundle: tuple[Path, Path]) -> None:
    home, path = bundle
    pipeline = json.loads((path / "pipeline.json").read_text())
    assert pipeline["image"] == {"resolution": 224, "resize": 256, "mean": 127.5, "std": 127.5,
                                 "interpolation": "bilinear"}
    assert len(pipeline["labels"]) == 1000 and pipeline["labels"][285] == "Egyptian cat"
    manifest = af.Registry(home).manifest("imagenet")
    assert manifest.extra["mode"] == "zero-shot"
    assert manifest.extra["parity"]["fp32_ok"]
    assert "int8_ok" not in manifest.extra["parity"]  # quantize: false in this spec


def test_cli_predict_zero_shot(bundle: tuple[Path, Path], tmp_path: Path) -> None:
    home, _ = bundle
    photo = tmp_path / "coffee.jpg"
    Image.fromarray(sample_photos()["coffee"]).save(photo, quality=92)
    env = dict(os.environ, AIFORGE_HOME=str(home))
    out = subprocess.run([sys.executable, "-m", "aiforge.cli", "predict", "imagenet", str(photo), "--top", "3"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout)
    assert row["label"] == "espresso" and len(row["scores"]) == 3 and row["score"] > 0.5

"""Train (head mode) on a real Fashion-MNIST slice, export, and use the torch-free bundle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from vision_helpers import CLASSES, N_TEST, RESOLUTION, TrainedImages, trained_images

import aiforge as af
from aiforge.tasks.image.data import load_image_dataset
from aiforge.tasks.image.decode import decode_image
from aiforge.tasks.image.preprocess import preprocess
from aiforge.tasks.image.runtime import ImageRuntime

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained() -> TrainedImages:
    return trained_images()


@pytest.fixture(scope="module")
def runtime(trained: TrainedImages) -> ImageRuntime:
    rt = af.load(trained.export.path, precision="fp32")
    assert isinstance(rt, ImageRuntime)
    return rt


def test_fit_scores_and_history(trained: TrainedImages) -> None:
    fit = trained.fit
    assert fit.test is not None and fit.test.n == len(CLASSES) * N_TEST
    assert fit.test.accuracy > 0.6  # 4 clothing classes from 12 images each, frozen ImageNet features
    assert sorted(fit.fitted.labels) == sorted(CLASSES)
    assert fit.history and fit.history[0]["phase"] == "head"


def test_bundle_files_manifest_and_parity(trained: TrainedImages) -> None:
    path = trained.export.path
    names = {p.name for p in path.iterdir()}
    assert {"model.onnx", "pipeline.json", "metrics.json", "card.md", "report.html", "manifest.json"} <= names
    pipeline = json.loads((path / "pipeline.json").read_text())
    assert pipeline["image"] == {"resolution": RESOLUTION, "resize": RESOLUTION, "mean": 127.5, "std": 127.5,
                                 "interpolation": "bilinear"}
    parity = trained.export.manifest.extra["parity"]
    assert parity["fp32_ok"] and parity["fp32_vs_torch_max_abs_prob_diff"] < 1e-4
    assert parity["int8_method"].startswith("static")
    assert parity["int8_calibration_samples"] > 0 and "train part" in parity["int8_calibration_source"]
    assert ("int8" in pipeline["graphs"]) == parity["int8_ok"]  # the gate decides what ships
    assert parity["int8_tries"][0]["top1_agreement"] > 0.5
    # the margin guard: chosen on tuning images (validation, then unused training images), never the parity set
    assert parity["int8_fallback"] and parity["int8_tuning_samples"] > 0
    assert "validation" in parity["int8_tuning_source"]
    for row in parity["int8_tries"]:  # guarded rows take fp32's answer, so the guard never lowers agreement
        assert row["guarded_top1_agreement"] >= row["top1_agreement"]
        assert row["ok"] == (row["guarded_top1_agreement"] >= parity["int8_min_agreement"]
                             and row["tuning_fallback_rate"] <= parity["int8_max_fallback_rate"])
    assert ("int8_fallback" in pipeline) == (parity["int8_ok"] and parity["int8_min_margin"] > 0)
    card = (path / "card.md").read_text()
    assert "## Intended use" in card and "report.html" in card


def test_report_has_mistakes_and_gradcam(trained: TrainedImages) -> None:
    html = (trained.export.path / "report.html").read_text()
    assert "Most confident mistakes" in html and "Grad-CAM" in html
    assert html.count("data:image/png;base64,") >= 2 * 4  # 4 Grad-CAM pairs at least
    assert "<table>" in html  # confusion matrix
    stored = json.loads((trained.export.path / "metrics.json").read_text())["baseline"]
    assert "<h2>Baseline (accuracy; best chosen on validation)</h2>" in html  # beside the model's numbers
    assert f"baseline: {stored['best']} (best on validation)" in html and "paired bootstrap CI" in html


def test_gradcam_highlights_something(trained: TrainedImages) -> None:
    from aiforge.tasks.image.gradcam import gradcam
    from aiforge.tasks.image.preprocess import preprocess_batch

    fitted = trained.fit.fitted
    ds = load_image_dataset(trained.data / "test")
    pixels = preprocess_batch([ds.image(i) for i in range(4)], fitted.image)
    predicted = fitted.predict_proba(ds).argmax(1)[:4].tolist()
    cams = gradcam(fitted.model, pixels, predicted)
    assert cams.shape == (4, 4, 4)  # 1x1 at the last conv for 32 px inputs: an earlier 4x4 stage is used
    assert cams.max() <= 1.0 and cams.min() >= 0.0
    assert (cams.reshape(4, -1).max(axis=1) == 1.0).all()  # evidence for the predicted class somewhere
    assert (cams.reshape(4, -1).min(axis=1) < 1.0).all()  # ... but not everywhere


def test_runtime_computes_the_same_numbers_as_training(trained: TrainedImages, runtime: ImageRuntime) -> None:
    ds = load_image_dataset(trained.data / "test")
    fitted = trained.fit.fitted
    names = ds.names or []
    for i in (0, len(ds) - 1):  # training-side tensor == runtime-side tensor, exactly
        served = runtime.decode(Path(names[i]).read_bytes(), "upload")
        assert np.array_equal(served, preprocess(ds.image(i), fitted.image))
    torch_probs = fitted.predict_proba(ds)
    onnx_probs = runtime.predict_proba([Path(n).read_bytes() for n in names])
    assert np.abs(onnx_probs - torch_probs).max() < 1e-4
    assert np.abs(runtime.predict_proba(names) - onnx_probs).max() == 0  # paths and bytes alike


def test_guarded_int8_reruns_low_margin_items_in_fp32(trained: TrainedImages, tmp_path: Path) -> None:
    """A copy of the bundle with an int8 graph and a guard at the median margin: rows under it are
    fp32's rows, the rest int8's, and the counters say how many went to fp32."""
    import shutil

    from aiforge.tasks.image.export import GateData, _run, _session, quantize_static_with_parity
    from aiforge.tasks.image.preprocess import preprocess_batch

    bundle = tmp_path / "bundle"
    shutil.copytree(trained.export.path, bundle)
    fitted = trained.fit.fitted
    train, test = load_image_dataset(trained.data / "train"), load_image_dataset(trained.data / "test")
    calib = preprocess_batch([train.image(i) for i in range(len(train))], fitted.image)
    pixels = preprocess_batch([test.image(i) for i in range(len(test))], fitted.image)
    session = _session(bundle / "model.onnx")
    fp32, seconds = _run(session, pixels, len(CLASSES))
    quant = quantize_static_with_parity(bundle / "model.onnx", bundle / "model.int8.onnx", calib,
                                        GateData(pixels, fp32, calib, _run(session, calib, len(CLASSES))[0], seconds),
                                        min_agreement=0.0)
    assert quant["ok"] and quant["tries"][0]["int8_ms_per_image"] > 0
    int8 = quant["int8_probs"]
    margin = float(np.median(np.sort(int8, 1)[:, -1] - np.sort(int8, 1)[:, -2]))
    pipeline = json.loads((bundle / "pipeline.json").read_text())
    pipeline["graphs"]["int8"] = "model.int8.onnx"
    pipeline["int8_fallback"] = {"graph": "fp32", "min_margin": margin}
    (bundle / "pipeline.json").write_text(json.dumps(pipeline))

    manifest = trained.export.manifest
    only = ImageRuntime(bundle, manifest, precision="int8-only")
    guarded = ImageRuntime(bundle, manifest, precision="int8")
    plain = ImageRuntime(bundle, manifest, precision="fp32")
    names = test.names or []
    p_only, p_guarded, p_fp32 = (rt.predict_proba(names) for rt in (only, guarded, plain))
    np.testing.assert_allclose(p_only, int8, atol=1e-6)
    low = (np.sort(p_only, 1)[:, -1] - np.sort(p_only, 1)[:, -2]) < margin
    assert 0 < low.sum() < len(names)
    np.testing.assert_allclose(p_guarded[low], p_fp32[low], atol=1e-5)
    np.testing.assert_array_equal(p_guarded[~low], p_only[~low])
    assert guarded.counters() == {"items": len(names), "fp32_fallback_items": int(low.sum())}
    assert only.counters()["fp32_fallback_items"] == 0 and "int8_fallback" not in only.describe()
    assert guarded.describe()["int8_fallback"]["min_margin"] == margin


def test_runtime_file_verbs(trained: TrainedImages, runtime: ImageRuntime) -> None:
    metrics = af.evaluate(runtime, trained.data / "test")
    assert metrics.n == len(CLASSES) * N_TEST
    assert abs(metrics.accuracy - trained.fit.test.accuracy) < 1e-9
    rows = af.predict_file(runtime, trained.data / "test" / "Bag")
    assert len(rows) == N_TEST and rows[0]["label"] in CLASSES and rows[0]["image"].endswith(".png")
    assert runtime.describe()["image"]["resolution"] == RESOLUTION


def test_cli_predict_on_image_files(trained: TrainedImages) -> None:
    files = sorted((trained.data / "test" / "Trouser").glob("*.png"))[:2]
    env = dict(os.environ, AIFORGE_HOME=str(trained.home))
    out = subprocess.run([sys.executable, "-m", "aiforge.cli", "predict", "fashion4", *map(str, files), "--top", "2"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == 2 and all(len(r["scores"]) == 2 for r in rows)
    assert [r["label"] for r in rows] == [p.label for p in af.load(trained.export.path).predict(files)]
    bad = subprocess.run([sys.executable, "-m", "aiforge.cli", "predict", "fashion4", "no-such.png"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 1 and "no-such.png" in bad.stderr and "Traceback" not in bad.stderr


def test_exif_orientation_is_honoured_by_the_runtime(runtime: ImageRuntime, trained: TrainedImages) -> None:
    from PIL import Image
    from vision_helpers import exif_rotated_png

    src = next((trained.data / "test" / "Trouser").glob("*.png"))
    upright = Image.open(src).convert("RGB")
    rotated = exif_rotated_png(upright)
    img = decode_image(rotated, where="x", max_bytes=1 << 20, max_pixels=10**6)
    assert img.size == upright.size
    assert np.array_equal(runtime.predict_proba([rotated]), runtime.predict_proba([src.read_bytes()]))

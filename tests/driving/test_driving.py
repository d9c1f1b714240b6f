"""The driving kind end to end: a tiny fit -> bundle -> served act over real HTTP on a short episode; the
shield on constructed states; bad observations; the replay GIF and report; eval and ship on the bundle."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from driving_helpers import radar, tiny_spec, trained_driving
from PIL import Image

import aiforge
from aiforge.audit.checks import evaluate_bundle
from aiforge.audit.ship import ship
from aiforge.errors import DataError, SpecError
from aiforge.serve.loadgen import run_load
from aiforge.spec import BaseSpec
from aiforge.tasks.driving.env import env_info, make_env
from aiforge.tasks.driving.runtime import DrivingRuntime
from aiforge.tasks.driving.shield import ShieldRules, shield_actions
from aiforge.tasks.driving.spec import DrivingEnvSpec
from serve_helpers import metric_samples, serving

ACTIONS = ("LANE_LEFT", "IDLE", "LANE_RIGHT", "FASTER", "SLOWER")
pytestmark = pytest.mark.slow


def _decide(rows: np.ndarray, action: str, rules: ShieldRules | None = None) -> tuple[str, bool, str]:
    d = shield_actions(rows[None], np.array([ACTIONS.index(action)]), rules=rules or ShieldRules(), actions=ACTIONS)
    return ACTIONS[int(d.actions[0])], bool(d.overrode[0]), d.reasons[0]


def test_the_shield_overrides_constructed_unsafe_states_and_leaves_safe_ones() -> None:
    closing = radar((12.0, 0.0, -8.0, 0.0))  # 7 m gap to a car ahead closing at 8 m/s: TTC under 1 s
    assert _decide(closing, "FASTER") == ("SLOWER", True, "brake")
    assert _decide(closing, "IDLE") == ("SLOWER", True, "brake")
    assert _decide(closing, "SLOWER") == ("SLOWER", False, "")
    beside = radar((1.0, -4.0, 0.0, 0.0))  # a car alongside in the left lane
    assert _decide(beside, "LANE_LEFT") == ("IDLE", True, "lane")
    assert _decide(beside, "LANE_RIGHT") == ("LANE_RIGHT", False, "")
    open_road = radar((80.0, 0.0, 0.0, 0.0), (-60.0, 4.0, 0.0, 0.0))
    for action in ACTIONS:
        assert _decide(open_road, action) == (action, False, "")
    near = radar((25.0, 0.0, 0.0, 0.0))  # not closing in, but inside 0.9 s x 25 m/s of headway
    assert _decide(near, "FASTER") == ("IDLE", True, "headway")
    crossing = radar((12.0, -12.0, -8.0, 8.0))  # comes at the ego car from the side
    assert _decide(crossing, "IDLE")[1] is False
    assert _decide(crossing, "IDLE", ShieldRules(crossing=True)) == ("SLOWER", True, "crossing")


def test_the_shield_lets_an_evasive_lane_change_through_when_braking_cannot_help() -> None:
    # merge, seed 10000, the step before the shielded expert's collision: a car merged in 5 m ahead
    # (bumpers touching) a little slower than the ego car's slowest target speed (20 m/s), the ramp
    # car to the right far slower, the left lane open for 44 m. The old rule turned the expert's
    # LANE_LEFT into SLOWER (which cannot slow below 20 m/s) and the ego car drove into the car ahead.
    merged_in = radar((5.0, 0.0, -1.7, 0.0), (13.1, 4.0, -10.7, 0.0), (44.4, -4.0, 9.3, 0.0), ego_speed=20.0)
    assert _decide(merged_in, "LANE_LEFT") == ("LANE_LEFT", False, "")
    assert _decide(merged_in, "IDLE") == ("SLOWER", True, "brake")
    assert _decide(merged_in, "LANE_RIGHT") == ("SLOWER", True, "lane+brake")  # the ramp car: not a way out
    # in the leftmost lane there is no lane to the left: braking it stays
    leftmost = radar((5.0, 0.0, -1.7, 0.0), ego_speed=20.0, ego_y=0.0)
    assert _decide(leftmost, "LANE_LEFT") == ("SLOWER", True, "brake")
    # a lane to the right is a way out only where a vehicle shows it is there
    right_seen = radar((5.0, 0.0, -1.7, 0.0), (40.0, 4.0, 5.0, 0.0), ego_speed=20.0, ego_y=0.0)
    assert _decide(right_seen, "LANE_RIGHT") == ("LANE_RIGHT", False, "")
    assert _decide(leftmost, "LANE_RIGHT") == ("SLOWER", True, "brake")


def test_lanes_and_density_are_highway_settings() -> None:
    with pytest.raises(SpecError, match=r"env\.lanes applies to the highway scenario only"):
        BaseSpec.from_dict(tiny_spec(env={"scenario": "merge", "lanes": 3}))
    with pytest.raises(SpecError, match=r"unknown gate 'max_colision_rate'.*Did you mean 'max_collision_rate'"):
        BaseSpec.from_dict(tiny_spec(gates={"max_colision_rate": 0.1}))


def test_the_bundle_has_the_shield_rules_a_valid_replay_gif_and_a_report() -> None:
    b = trained_driving()
    rt = aiforge.load(b.path, home=b.home)
    assert isinstance(rt, DrivingRuntime) and rt.labels == list(ACTIONS)
    assert rt.pipeline["shield"]["enabled"] is True and rt.pipeline["shield"]["rules"]["ttc_s"] == 3.0
    with Image.open(b.path / "replay.gif") as gif:
        assert gif.format == "GIF" and gif.n_frames > 1 and gif.size == (600, 150)
    page = (b.path / "report.html").read_text(encoding="utf-8")
    assert 'src="replay.gif"' in page and "aiforge+shield" in page and "<svg" in page
    headline = b.export.manifest.extra["metrics"]
    assert set(headline) == {"collision_rate", "mean_speed", "mean_return", "shield_override_rate"}
    assert 0 <= headline["collision_rate"] <= 1 and headline["mean_speed"] > 5


def test_a_short_episode_served_over_http_with_v2_and_bad_observations(tmp_path: Path) -> None:
    b = trained_driving()
    spec = DrivingEnvSpec(scenario="highway", observation="kinematics", duration=8)
    env = make_env(spec)
    obs, _ = env.reset(seed=123)
    shape = list(env_info(spec).observation_shape)
    with serving(b.path, b.home, tmp_path / "server.log") as server:
        base = f"http://127.0.0.1:{server.port}"
        url = f"{base}/v1/models/{b.name}/act"
        with httpx.Client(timeout=30) as client:
            steps = 0
            done = False
            driven = []
            while not done:  # the served policy drives the episode
                driven.append(json.dumps({"observations": [obs.tolist()]}).encode())
                r = client.post(url, json={"observation": obs.tolist()})
                assert r.status_code == 200, r.text
                [act] = r.json()["actions"]
                assert act["action"] in ACTIONS and isinstance(act["shield_overrode"], bool)
                assert act["shield_checked"] is True and abs(sum(act["probabilities"].values()) - 1) < 1e-3
                obs, _, terminated, truncated, _ = env.step(act["action_index"])
                done = terminated or truncated
                steps += 1
            assert steps >= 1
            # 8 clients at once (the load generator bench/driving.py measures with): every request answered,
            # each reached the batcher once, and concurrent ones shared graph runs. The bench's old client
            # (16 httpx clients built inside the timed window) got fewer answers than it had clients.
            before = metric_samples(client.get(f"{base}/metrics").text)
            load = run_load(base, f"/v1/models/{b.name}/act", [], concurrency=8, duration=1.5, bodies=driven)
            after = metric_samples(client.get(f"{base}/metrics").text)
            assert load.errors == 0 and load.status_counts == {"200": load.requests}, load
            assert load.requests >= 2 * 8, load
            key = (("model", b.name),)
            items = after[("aiforge_items_total", key)] - before[("aiforge_items_total", key)]
            batches = after[("aiforge_batch_size_count", key)] - before[("aiforge_batch_size_count", key)]
            assert items == load.requests and 1 <= batches < items, (items, batches)
            # an unsafe state is overridden by the served shield: FASTER or not, the car brakes
            unsafe = radar((10.0, 0.0, -10.0, 0.0)).tolist()
            [act] = client.post(url, json={"observations": [unsafe]}).json()["actions"]
            assert act["action"] == "SLOWER" and act["shield_overrode"] == (act["proposed"] != "SLOWER")
            # v2 infer: the same observations as one FP32 tensor
            flat = np.array([unsafe, obs.tolist()], dtype=np.float32)
            body = {"inputs": [{"name": "observation", "datatype": "FP32", "shape": [2, *shape],
                                "data": flat.ravel().tolist()}]}
            r = client.post(f"{base}/v2/models/{b.name}/infer", json=body)
            assert r.status_code == 200, r.text
            outputs = {o["name"]: o for o in r.json()["outputs"]}
            assert outputs["action"]["data"][0] == "SLOWER" and outputs["action"]["shape"] == [2]
            assert outputs["probabilities"]["shape"] == [2, len(ACTIONS)]
            # bad observations: 4xx naming the expected shape, never a 500
            bad = [{"observation": [[0.0] * 7] * 5}, {"observation": "road"},
                   {"observations": [obs.tolist(), [[["x"] * 7] * 7]]}, {"observation": obs.tolist(), "speed": 3},
                   {"observation": obs.tolist(), "radar": [[0.0] * 7]}, {}]
            for payload in bad:
                r = client.post(url, json=payload)
                assert r.status_code == 422, (payload, r.status_code, r.text)
            r = client.post(url, json={"observation": [[0.0] * 7] * 5})
            assert "expected an observation of shape [7, 7] (float32), got shape [5, 7]" in r.json()["error"]
            r = client.post(url, content=b'{"observation": [[NaN, 1, 2, 3, 4, 5, 6]]}',
                            headers={"content-type": "application/json"})
            assert 400 <= r.status_code < 500, r.text
            body["inputs"][0]["shape"] = [2, 7, 6]
            r = client.post(f"{base}/v2/models/{b.name}/infer", json=body)
            assert r.status_code == 400 and "expected shape [n, 7, 7]" in r.json()["error"], r.text


def test_eval_drives_a_plan_and_ship_checks_the_driving_gates(tmp_path: Path) -> None:
    b = trained_driving()
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"episodes: 1\npolicies: [expert, aiforge+shield]\nreplay_frames: 4\noutput: {tmp_path / 'out'}\n",
                    encoding="utf-8")
    report = evaluate_bundle(b.path, plan, home=b.home)
    assert set(report.metrics["policies"]) == {"expert", "aiforge+shield"}
    assert (tmp_path / "out" / "report.html").is_file() and (tmp_path / "out" / "replay.gif").is_file()
    (tmp_path / "bad.yaml").write_text("episodes: 1\npolicies: [dqn]\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"policies: unknown \['dqn'\]"):
        evaluate_bundle(b.path, tmp_path / "bad.yaml", home=b.home)
    verdict = ship(b.path, home=b.home, gates={"max_collision_rate": 1.0, "min_mean_speed": 1000.0,
                                               "max_p99_act_latency_ms": 1000.0, "max_shield_override_rate": 1.0})
    by_key = {r.key: r for r in verdict.results}
    assert set(by_key) == {"max_collision_rate", "min_mean_speed", "max_p99_act_latency_ms",
                           "max_shield_override_rate"}
    assert by_key["max_collision_rate"].passed and not by_key["min_mean_speed"].passed
    assert by_key["max_p99_act_latency_ms"].measured is not None and verdict.stage != "production"

"""Driving benchmark: closed-loop numbers of random, expert, SB3 DQN, aiforge and aiforge + shield; serving.

    nice python bench/driving.py [--only closed-loop,serve] [--episodes 100] [--camera-episodes 50]
                                 [--other-episodes 30] [--duration 10] [--out FILE]

- highway (highway-fast's 3 lanes, 20 vehicles, density 1, 30 s; target speeds 10-30 m/s),
  kinematics: aiforge (BC + DAgger through ``App.fit``/``export``), its bundle driving through the
  torch-free runtime with and without the shield, the expert it imitated, a random driver, and
  stable-baselines3 DQN (highway-env's documented recipe: MlpPolicy [256, 256], lr 5e-4,
  gamma 0.8, buffer 15000, on the normalized kinematics observation) trained for the same number
  of environment steps aiforge's imitation used. ``--episodes`` seeded episodes each (seeds 10000+).
- highway, camera (4 stacked 128x64 grayscale frames): aiforge's CNN vs DQN's CnnPolicy recipe at the
  same env-step budget, ``--camera-episodes`` each.
- merge and intersection (kinematics): every policy but DQN, ``--other-episodes`` each.
- serve: the highway kinematics bundle served by ``aiforge serve``; ``/v1/models/NAME/act`` with one
  observation per request at concurrency 1 and 16 (p50/p99), and the bundle's size.

Training wall time is given for each trained policy. Writes bench/results/driving.json (merging
with an existing file, so the parts can run separately).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


QUICK = False  # --quick: a smoke run (tiny training)
# --expert-episodes, --dagger-*
TRAIN = {"expert_episodes": 30, "dagger_rounds": 3, "dagger_episodes": 10, "threads": 1}


def _spec(name: str, scenario: str, observation: str, *, episodes: int | None = None) -> Any:
    from aiforge.spec import BaseSpec

    train: dict[str, Any] = dict(TRAIN)
    if episodes is not None:
        train["expert_episodes"] = episodes
    if QUICK:
        train = {"expert_episodes": 1, "dagger_rounds": 1, "dagger_episodes": 1, "epochs": 2, "min_updates": 0}
    if observation == "camera":
        train.update({"epochs": 15, "batch_size": 128, "min_updates": 1500})
    return BaseSpec.from_dict({"name": name, "task": "driving",
                               "env": {"scenario": scenario, "observation": observation},
                               "train": train, "eval": {"episodes": 2, "baselines": False, "replay_frames": 30}})


def _train(spec: Any, home: Path) -> tuple[Any, float, int, Path]:
    from aiforge.app import App, load

    application = App(spec, home=home)
    start = time.perf_counter()
    result = application.fit(progress=False)
    seconds = time.perf_counter() - start
    exported = application.export()
    return load(exported.path), seconds, int(result.imitation.env_steps), exported.path


class DQNPolicy:
    """A stable-baselines3 DQN driving; kinematics models read highway-env's normalized default rows."""

    def __init__(self, model: Any, *, normalized_kinematics: bool) -> None:
        self.model, self.name = model, "dqn"
        self.normalized = normalized_kinematics
        self._reader: tuple[int, Any] | None = None

    def act(self, env: Any, radar: np.ndarray, observation: np.ndarray) -> int:
        if self.normalized:
            from highway_env.envs.common.observation import KinematicObservation

            if self._reader is None or self._reader[0] != id(env.unwrapped):
                self._reader = (id(env.unwrapped), KinematicObservation(env.unwrapped))
            observation = self._reader[1].observe()
        action, _ = self.model.predict(observation, deterministic=True)
        return int(action)


def _dqn(env_spec: Any, steps: int, *, camera: bool, seed: int = 0) -> tuple[DQNPolicy, float]:
    import gymnasium as gym
    from stable_baselines3 import DQN

    from aiforge.tasks.driving.env import ENV_IDS, env_config

    config = env_config(env_spec)
    if not camera:
        config["observation"] = {"type": "Kinematics"}  # the recipe's normalized 5x5 rows
    env = gym.make(ENV_IDS[env_spec.scenario], config=config)
    common = {"learning_rate": 5e-4, "buffer_size": 15000, "learning_starts": 200, "batch_size": 32, "gamma": 0.8,
              "train_freq": 1, "gradient_steps": 1, "target_update_interval": 50, "verbose": 0, "seed": seed}
    if camera:
        model = DQN("CnnPolicy", env, exploration_fraction=0.7, **common)
    else:
        model = DQN("MlpPolicy", env, policy_kwargs={"net_arch": [256, 256]}, **common)
    start = time.perf_counter()
    model.learn(total_timesteps=steps)
    return DQNPolicy(model, normalized_kinematics=not camera), time.perf_counter() - start


def _loop(rt: Any, env_spec: Any, episodes: int, extra: dict[str, Any], policies: tuple[str, ...]) -> dict[str, Any]:
    from aiforge.tasks.driving.closedloop import closed_loop
    from aiforge.tasks.driving.rollout import run_episodes, summarize

    seeds = list(range(10_000, 10_000 + episodes))
    loop = closed_loop(rt, env_spec, episodes=episodes, seed=10_000, policies=policies)
    out = {k: v.to_dict() for k, v in loop.summaries.items()}
    for name, policy in extra.items():
        out[name] = summarize(name, run_episodes(policy, env_spec, seeds=seeds)).to_dict()
    return out


def closed_loop_part(args: argparse.Namespace, home: Path) -> dict[str, Any]:
    from aiforge.tasks.driving.closedloop import POLICIES

    results: dict[str, Any] = {}
    for scenario, observation, episodes in (("highway", "kinematics", args.episodes),
                                            ("highway", "camera", args.camera_episodes),
                                            ("merge", "kinematics", args.other_episodes),
                                            ("intersection", "kinematics", args.other_episodes)):
        key = f"{scenario}-{observation}"
        if (scenario != "highway" and args.skip_others) or (args.scenarios and key not in args.scenarios):
            continue
        print(f"[{time.strftime('%H:%M:%S')}] {key}: training", flush=True)
        load_start = os.getloadavg()
        spec = _spec(f"bench-{key}", scenario, observation)
        rt, seconds, steps, path = _train(spec, home)
        row: dict[str, Any] = {"episodes": episodes, "env_steps": steps, "train_seconds": {"aiforge": seconds},
                               "bundle": str(path), "load_average_at_start": load_start}
        extra = {}
        if scenario == "highway":
            print(f"[{time.strftime('%H:%M:%S')}] {key}: DQN for {steps} env steps", flush=True)
            dqn, dqn_seconds = _dqn(spec.env, steps, camera=observation == "camera")
            row["train_seconds"]["dqn"] = dqn_seconds
            extra["dqn"] = dqn
        policies = POLICIES if observation == "kinematics" else ("aiforge", "aiforge+shield")
        print(f"[{time.strftime('%H:%M:%S')}] {key}: {episodes} episodes x {len(policies) + len(extra)} policies",
              flush=True)
        row["policies"] = _loop(rt, spec.env, episodes, extra, policies)
        row["load_average_at_end"] = os.getloadavg()
        row["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        results[key] = row
        print(json.dumps({key: {p: {k: r[k] for k in ("collision_rate", "mean_speed", "mean_return")}
                                for p, r in row["policies"].items()}}), flush=True)
        _write(args.out, {"closed_loop": results})
    return results


def _torch_loaded(pid: int) -> bool:
    """Whether the server process has libtorch mapped (i.e. imported torch), as bench/serve.py checks."""
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def serve_part(args: argparse.Namespace, home: Path, bundle: Path | None) -> dict[str, Any]:
    """``aiforge serve`` of the bundle, loaded by the project's load generator (its own process).

    The previous version ran 16 httpx clients in this process, created inside the timed window
    (each builds an SSL context, blocking the event loop) beside a live simulator: that measured
    the client (0.6 req/s at c=16), not the server.
    """
    from aiforge.bundle.runtime import Runtime
    from aiforge.serve.loadgen import aiforge_server_args, free_port, measure_levels, running_server
    from aiforge.tasks.driving.env import make_env
    from aiforge.tasks.driving.spec import DrivingEnvSpec

    if bundle is None:
        rt, _, _, bundle = _train(_spec("bench-serve", "highway", "kinematics", episodes=10), home)
    rt = Runtime.load(bundle)
    env = make_env(DrivingEnvSpec(**rt.pipeline["env"]))
    bodies = []
    o, _ = env.reset(seed=1)
    for _ in range(20):  # real observations of a drive, one per request
        bodies.append(json.dumps({"observations": [o.tolist()]}).encode())
        o, _, term, trunc, _ = env.step(1)
        if term or trunc:
            o, _ = env.reset()
    env.close()
    port = free_port()
    os.environ["AIFORGE_HOME"] = str(home)
    out: dict[str, Any] = {"bundle_mb": sum(int(f["size"]) for f in rt.manifest.files.values()) / 1e6,
                           "precision": rt.precision, "load_average_before": os.getloadavg()}
    with running_server(aiforge_server_args([str(bundle)], port=port), port=port) as (proc, _ready):
        out["levels"] = measure_levels(f"http://127.0.0.1:{port}", f"/v1/models/{rt.name}/act", [], bodies=bodies,
                                       levels=[1, 16], duration=args.duration, warmup_concurrency=4, unit="req/s")
        out["torch_imported"] = _torch_loaded(proc.pid)
    out["load_average_after"] = os.getloadavg()
    return out


def _targets(loops: dict[str, Any]) -> dict[str, bool]:
    out = {}
    hk = loops.get("highway-kinematics", {}).get("policies", {})
    if hk:
        shielded, expert = hk["aiforge+shield"], hk["expert"]
        out["aiforge+shield collision <= 0.02"] = shielded["collision_rate"] <= 0.02
        out["aiforge+shield mean speed within 5% of expert"] = shielded["mean_speed"] >= 0.95 * expert["mean_speed"]
    cam = loops.get("highway-camera", {}).get("policies", {})
    if cam:
        out["camera aiforge beats DQN on return"] = cam["aiforge"]["mean_return"] > cam["dqn"]["mean_return"]
        out["camera aiforge beats DQN on collision rate"] = cam["aiforge"]["collision_rate"] < \
            cam["dqn"]["collision_rate"]
    return out


def _write(path: Path, update: dict[str, Any]) -> None:
    current = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    for key, value in update.items():  # closed-loop parts merge scenario by scenario
        if key == "closed_loop" and isinstance(current.get(key), dict):
            current[key] = {**current[key], **value}
        else:
            current[key] = value
    current["targets"] = _targets(current.get("closed_loop", {}))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(current, indent=2), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="closed-loop,serve")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--camera-episodes", type=int, default=50)
    parser.add_argument("--other-episodes", type=int, default=30)
    parser.add_argument("--skip-others", action="store_true")
    parser.add_argument("--scenarios", type=lambda v: [x for x in v.split(",") if x], default=[],
                        help="only these parts, e.g. highway-camera,merge-kinematics [default: all four]")
    parser.add_argument("--bundle", type=Path, help="serve: this driving bundle instead of the run's (or a new one)")
    parser.add_argument("--merge-from", type=Path, help="merge another run's results file into --out, then stop")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "driving.json")
    parser.add_argument("--quick", action="store_true", help="tiny training: a smoke run of the script")
    parser.add_argument("--expert-episodes", type=int, default=30)
    parser.add_argument("--dagger-rounds", type=int, default=3)
    parser.add_argument("--dagger-episodes", type=int, default=10)
    args = parser.parse_args()
    global QUICK
    QUICK = args.quick
    import torch

    torch.set_num_threads(1)  # one bench process at a time, one thread: the machine is shared
    TRAIN.update(expert_episodes=args.expert_episodes, dagger_rounds=args.dagger_rounds,
                 dagger_episodes=args.dagger_episodes)
    parts = set(args.only.split(","))
    if args.merge_from:
        _write(args.out, json.loads(args.merge_from.read_text(encoding="utf-8")))
        print(f"merged {args.merge_from} into {args.out}")
        return
    with tempfile.TemporaryDirectory(prefix="aiforge-bench-driving-") as tmp:
        home = Path(os.environ.get("AIFORGE_HOME") or tmp)
        os.environ["AIFORGE_HOME"] = str(home)
        bundle = args.bundle
        if "closed-loop" in parts:
            results = closed_loop_part(args, home)
            _write(args.out, {"closed_loop": results})
            if "highway-kinematics" in results:
                bundle = Path(results["highway-kinematics"]["bundle"])
        if "serve" in parts:
            _write(args.out, {"serve": serve_part(args, home, bundle)})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

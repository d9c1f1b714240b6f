"""Closed-loop driving: run a policy (and the shield) for seeded episodes and measure each one.

A policy is any object with ``name`` and ``act(env, radar, observation) -> action index``:
the expert, a random driver, a trained network (PyTorch in training, ONNX when served).
Per episode: collision, return, mean speed, distance, lane changes, minimum time-to-collision,
shield overrides and the policy's latency per step; optionally the frames of a replay.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from aiforge.tasks.driving.env import env_info, make_env, radar_reader
from aiforge.tasks.driving.shield import ShieldRules, shield_actions
from aiforge.tasks.driving.spec import DrivingEnvSpec

__all__ = ["Episode", "Policy", "RandomPolicy", "Summary", "run_episodes", "summarize"]


class Policy(Protocol):
    """Something that drives: one action index per step."""

    name: str

    def act(self, env: Any, radar: np.ndarray, observation: np.ndarray) -> int: ...


class RandomPolicy:
    """Uniformly random meta-actions (a baseline)."""

    name = "random"

    def __init__(self, n_actions: int, seed: int = 0) -> None:
        self.n = n_actions
        self.rng = np.random.default_rng(seed)

    def act(self, env: Any, radar: np.ndarray, observation: np.ndarray) -> int:
        return int(self.rng.integers(self.n))


@dataclass
class Episode:
    """One closed-loop episode's numbers (and, when recorded, its frames and shield marks)."""

    seed: int
    steps: int
    crashed: bool
    episode_return: float
    mean_speed: float
    distance_m: float
    lane_changes: int
    min_ttc_s: float
    overrides: int
    latency_ms: list[float] = field(default_factory=list, repr=False)
    frames: list[np.ndarray] = field(default_factory=list, repr=False)
    overridden_steps: list[int] = field(default_factory=list)
    # the recorded steps' (observation, radar, action taken): what the replay shows and the playground posts
    recorded: list[tuple[np.ndarray, np.ndarray, int]] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, without frames or per-step latencies."""
        d = asdict(self)
        d.pop("frames")
        d.pop("latency_ms")
        d.pop("recorded")
        d["min_ttc_s"] = None if not np.isfinite(self.min_ttc_s) else round(self.min_ttc_s, 3)
        return d


@dataclass(frozen=True)
class Summary:
    """The closed-loop numbers of one policy over its episodes."""

    policy: str
    episodes: int
    collision_rate: float
    mean_speed: float
    mean_return: float
    mean_distance_m: float
    lane_changes_per_episode: float
    overrides_per_episode: float
    override_rate: float  # overrides per step
    min_ttc_p10_s: float | None
    min_ttc_median_s: float | None
    latency_p50_ms: float
    latency_p99_ms: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(name: str, episodes: list[Episode]) -> Summary:
    """Means over ``episodes`` (speed weighted by steps), TTC quantiles and latency percentiles."""
    steps = sum(e.steps for e in episodes) or 1
    lat = np.array([x for e in episodes for x in e.latency_ms] or [0.0])
    ttc = np.array([e.min_ttc_s for e in episodes if np.isfinite(e.min_ttc_s)])
    n = len(episodes) or 1
    return Summary(
        policy=name, episodes=len(episodes), collision_rate=sum(e.crashed for e in episodes) / n,
        mean_speed=sum(e.mean_speed * e.steps for e in episodes) / steps,
        mean_return=float(np.mean([e.episode_return for e in episodes])) if episodes else 0.0,
        mean_distance_m=float(np.mean([e.distance_m for e in episodes])) if episodes else 0.0,
        lane_changes_per_episode=sum(e.lane_changes for e in episodes) / n,
        overrides_per_episode=sum(e.overrides for e in episodes) / n,
        override_rate=sum(e.overrides for e in episodes) / steps,
        min_ttc_p10_s=float(np.percentile(ttc, 10)) if ttc.size else None,
        min_ttc_median_s=float(np.median(ttc)) if ttc.size else None,
        latency_p50_ms=float(np.percentile(lat, 50)), latency_p99_ms=float(np.percentile(lat, 99)))


def run_episodes(policy: Policy, spec: DrivingEnvSpec, *, seeds: list[int], shield: ShieldRules | None = None,
                 record: int = 0, on_step: Callable[[Any, np.ndarray, np.ndarray, int], None] | None = None,
                 ) -> list[Episode]:
    """Drive one episode per seed; ``record`` frames of the first episode are kept for a replay.

    ``on_step(env, radar, observation, action)`` is called before each step with the action
    taken (DAgger labels the visited states through it).
    """
    info = env_info(spec)
    env = make_env(spec, render=record > 0)
    # a kinematics observation is the radar (the same rows, same config): read the simulator once a step
    same = spec.observation == "kinematics"
    radar_now = radar_reader(env, spec)
    dt = 1.0 / float(env.unwrapped.config["policy_frequency"])
    out = []
    try:
        for k, seed in enumerate(seeds):
            obs, _ = env.reset(seed=seed)
            ep = Episode(seed, 0, False, 0.0, 0.0, 0.0, 0, float("inf"), 0)
            speeds: list[float] = []
            lane = _lane_id(env)
            done = False
            while not done:
                radar = np.asarray(obs, dtype=np.float32) if same else radar_now()
                start = time.perf_counter()
                proposed = policy.act(env, radar, obs)
                action = proposed
                if getattr(policy, "overrode", False):  # a policy that shields itself (the served runtime)
                    ep.overrides += 1
                    ep.overridden_steps.append(ep.steps)
                if shield is not None:
                    decision = shield_actions(radar[None], np.array([proposed]), rules=shield, actions=info.actions)
                    action = int(decision.actions[0])
                    if decision.overrode[0]:
                        ep.overrides += 1
                        ep.overridden_steps.append(ep.steps)
                ep.latency_ms.append((time.perf_counter() - start) * 1000)
                ttc = shield_actions(radar[None], np.array([0]), rules=ShieldRules(), actions=info.actions).min_ttc_s
                ep.min_ttc_s = min(ep.min_ttc_s, float(ttc[0]))
                if on_step is not None:
                    on_step(env, radar, obs, action)
                if record and k == 0 and len(ep.frames) < record:
                    ep.frames.append(np.array(env.render(), copy=True))
                    ep.recorded.append((np.array(obs, copy=True), np.array(radar, copy=True), int(action)))
                obs, reward, terminated, truncated, step_info = env.step(action)
                done = bool(terminated or truncated)
                ep.steps += 1
                ep.episode_return += float(reward)
                speeds.append(float(step_info.get("speed", 0.0)))
                ep.crashed = ep.crashed or bool(step_info.get("crashed", False))
                now = _lane_id(env)
                ep.lane_changes += int(now != lane)
                lane = now
            if record and k == 0 and len(ep.frames) < record:
                ep.frames.append(np.array(env.render(), copy=True))
            ep.mean_speed = float(np.mean(speeds)) if speeds else 0.0
            ep.distance_m = float(np.sum(speeds) * dt)
            out.append(ep)
    finally:
        env.close()
    return out


def _lane_id(env: Any) -> Any:
    vehicle = env.unwrapped.vehicle
    index = getattr(vehicle, "lane_index", None)
    return index[2] if index else None

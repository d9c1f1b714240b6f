"""The simulator: highway-env scenarios built from a :class:`DrivingEnvSpec`, headless.

``make_env`` returns a gymnasium env whose observation is the spec's mode; ``radar`` reads the
kinematics rows (nearby vehicles, relative to the ego car) from the same simulator, which the
safety shield checks whatever the policy sees. pygame is told to draw off-screen
(``SDL_VIDEODRIVER=offscreen``: under ``dummy`` highway-env disables its viewer and every frame and
camera observation is black) before highway-env imports it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from aiforge.errors import AiforgeError
from aiforge.tasks.driving.spec import DrivingEnvSpec

# SDL's "offscreen" driver, not "dummy": highway-env turns its viewer off under "dummy" (black frames)
if os.environ.get("SDL_VIDEODRIVER", "dummy") == "dummy":
    os.environ["SDL_VIDEODRIVER"] = "offscreen"
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

__all__ = ["ENV_IDS", "KINEMATIC_FEATURES", "EnvInfo", "env_config", "env_info", "make_env", "radar_reader"]

# highway-fast-v0: highway at 5 Hz simulation with 20 vehicles, ~10x faster than highway-v0 on a CPU
ENV_IDS = {"highway": "highway-fast-v0", "merge": "merge-v0", "intersection": "intersection-v0"}
KINEMATIC_FEATURES = ("presence", "x", "y", "vx", "vy", "cos_h", "sin_h")
HIGHWAY_ACTIONS = ("LANE_LEFT", "IDLE", "LANE_RIGHT", "FASTER", "SLOWER")
LONGITUDINAL_ACTIONS = ("SLOWER", "IDLE", "FASTER")


@dataclass(frozen=True)
class EnvInfo:
    """What a policy for this env takes and gives: observation shape/dtype and action names."""

    observation_shape: tuple[int, ...]
    observation_dtype: str
    actions: tuple[str, ...]
    radar_shape: tuple[int, int]


def _gym() -> Any:
    try:
        import gymnasium as gym
        import highway_env  # noqa: F401  (registers the envs)
    except ImportError as exc:
        raise AiforgeError("driving needs highway-env: pip install gymnasium==1.4.0 highway-env==1.12.1 "
                           f"(or make install) ({exc}).") from exc
    return gym


def _kinematics(spec: DrivingEnvSpec) -> dict[str, Any]:
    return {"type": "Kinematics", "vehicles_count": spec.vehicles_observed, "features": list(KINEMATIC_FEATURES),
            "absolute": False, "normalize": False, "clip": False, "order": "sorted", "see_behind": True}


def env_config(spec: DrivingEnvSpec) -> dict[str, Any]:
    """The highway-env config dict of the spec (observation, traffic, duration)."""
    if spec.observation == "kinematics":
        obs: dict[str, Any] = _kinematics(spec)
    elif spec.observation == "lidar":
        obs = {"type": "LidarObservation", "cells": spec.lidar_cells, "maximum_range": 60, "normalize": True}
    else:
        obs = {"type": "GrayscaleObservation", "observation_shape": tuple(spec.camera_shape),
               "stack_size": spec.camera_stack, "weights": [0.2989, 0.5870, 0.1140], "scaling": 1.75}
    config: dict[str, Any] = {"observation": obs}
    if spec.scenario == "highway":
        config.update({k: v for k, v in {"lanes_count": spec.lanes, "vehicles_density": spec.density,
                                         "vehicles_count": spec.vehicles}.items() if v is not None})
    speeds = spec.target_speeds or ([10.0, 15.0, 20.0, 25.0, 30.0] if spec.scenario == "highway" else None)
    if speeds is not None:
        lateral = spec.scenario != "intersection"
        config["action"] = {"type": "DiscreteMetaAction", "target_speeds": speeds, "longitudinal": True,
                            "lateral": lateral}
    if spec.duration is not None:
        config["duration"] = spec.duration
    if spec.observation == "camera":  # the frame follows the ego car at the render's scale
        config.update({"screen_width": 600, "screen_height": 150})
    return config


def make_env(spec: DrivingEnvSpec, *, render: bool = False) -> Any:
    """A gymnasium env of the spec's scenario and observation (``render``: rgb_array frames too)."""
    gym = _gym()
    config = env_config(spec)
    if render or spec.observation == "camera":
        config["offscreen_rendering"] = True  # draw into memory: without it headless frames come out black
    env = gym.make(ENV_IDS[spec.scenario], config=config, render_mode="rgb_array" if render else None)
    return env


def radar_reader(env: Any, spec: DrivingEnvSpec) -> Any:
    """A callable giving the kinematics rows (``vehicles_observed`` x 7, float32) of ``env`` now."""
    from highway_env.envs.common.observation import KinematicObservation

    cfg = _kinematics(spec)
    cfg.pop("type")
    reader = KinematicObservation(env.unwrapped, **cfg)
    return lambda: np.asarray(reader.observe(), dtype=np.float32)


def env_info(spec: DrivingEnvSpec) -> EnvInfo:
    """Observation shape and dtype, and the action names, without building an env."""
    if spec.observation == "kinematics":
        shape: tuple[int, ...] = (spec.vehicles_observed, len(KINEMATIC_FEATURES))
        dtype = "float32"
    elif spec.observation == "lidar":
        shape, dtype = (spec.lidar_cells, 2), "float32"
    else:
        w, h = spec.camera_shape
        shape, dtype = (spec.camera_stack, w, h), "uint8"
    actions = LONGITUDINAL_ACTIONS if spec.scenario == "intersection" else HIGHWAY_ACTIONS
    return EnvInfo(shape, dtype, actions, (spec.vehicles_observed, len(KINEMATIC_FEATURES)))

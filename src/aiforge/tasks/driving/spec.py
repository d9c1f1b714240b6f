"""DrivingSpec: the typed form of a driving ``aiforge.yaml`` (no torch, no simulator here).

A driving app is a policy for highway-env: a scenario (``highway``, ``merge``, ``intersection``),
an observation mode (``kinematics``, ``lidar`` or ``camera``), an expert it imitates (behaviour
cloning, then DAgger rounds), a rule-based safety shield, and the closed-loop evaluation that
``aiforge eval`` and ``ship`` run.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from aiforge.audit.gates import ReleaseGates
from aiforge.spec import BaseSpec, ServeSpec, Strict

__all__ = ["DrivingEnvSpec", "DrivingEvalSpec", "DrivingGates", "DrivingOptimizeSpec", "DrivingSpec",
           "DrivingTrainSpec", "ShieldSpec"]

Scenario = Literal["highway", "merge", "intersection"]
Observation = Literal["kinematics", "lidar", "camera"]


class DrivingEnvSpec(Strict):
    """The simulated world: scenario, traffic, episode length and what the car observes.

    ``lanes`` and ``density`` apply to ``highway`` (merge and intersection have fixed roads);
    unset values take highway-env's defaults for the scenario (highway: highway-fast's 3 lanes,
    20 vehicles, density 1, 30 s).
    """

    scenario: Scenario = "highway"
    observation: Observation = "kinematics"
    lanes: int | None = Field(default=None, ge=2, le=6)
    density: float | None = Field(default=None, gt=0, le=3)
    vehicles: int | None = Field(default=None, ge=1, le=60)
    duration: int | None = Field(default=None, ge=5, le=120, description="episode length, seconds (= steps)")
    target_speeds: list[float] | None = Field(default=None, min_length=2, max_length=10, description="the ego "
                                              "car's speed steps (m/s) for FASTER/SLOWER; highway default "
                                              "10-30 m/s in 5s (highway-env's is 20-30, which leaves no way to "
                                              "slow down behind a car under 20 m/s)")
    vehicles_observed: int = Field(default=7, ge=2, le=20, description="rows of the kinematics observation")
    lidar_cells: int = Field(default=24, ge=8, le=128)
    camera_shape: tuple[int, int] = Field(default=(128, 64), description="grayscale frame width, height")
    camera_stack: int = Field(default=4, ge=1, le=8)

    @model_validator(mode="after")
    def _road_settings(self) -> DrivingEnvSpec:
        if self.scenario != "highway":
            for key in ("lanes", "density", "vehicles"):
                if getattr(self, key) is not None:
                    raise ValueError(f"env.{key} applies to the highway scenario only; the {self.scenario} "
                                     "scenario has a fixed road and traffic")
        w, h = self.camera_shape
        if not (32 <= w <= 256 and 32 <= h <= 256):
            raise ValueError(f"env.camera_shape must be two sizes from 32 to 256 pixels, got {list(self.camera_shape)}")
        return self


class DrivingTrainSpec(Strict):
    """Imitation: expert episodes for behaviour cloning, then DAgger rounds; the network's size."""

    seed: int = 0
    expert_episodes: int = Field(default=30, ge=1)
    dagger_rounds: int = Field(default=3, ge=0)
    dagger_episodes: int = Field(default=10, ge=1, description="episodes driven by the policy per DAgger round")
    dagger_beta: float = Field(default=0.5, ge=0, le=1, description="expert's share of the driving in round 1 "
                               "(halved each round)")
    epochs: int = Field(default=30, ge=1)
    min_updates: int = Field(default=2000, ge=0, description="at least this many gradient updates per fit: a "
                             "few thousand states are a handful of batches an epoch, and 30 epochs of them "
                             "(90 updates) left the policy far from the expert")
    batch_size: int = Field(default=256, ge=8)
    lr: float = Field(default=1e-3, gt=0)
    hidden: int = Field(default=128, ge=8, le=1024)
    perception_weight: float = Field(default=1.0, ge=0, description="camera: weight of the perception head's "
                                     "loss (lane features of the simulator's radar rows, training only)")
    threads: int | None = Field(default=None, gt=0)


class ShieldSpec(Strict):
    """The safety shield's rules and thresholds (stored in pipeline.json, run in numpy when serving).

    An action is overridden when it would leave a vehicle ahead within ``min_gap_m`` or a
    time-to-collision under ``ttc_s`` (brake instead), when ``faster`` would cut the headway
    under ``headway_s``, or when a lane change meets a vehicle in the target lane closer than
    those limits (keep the lane). ``crossing`` adds a closest-approach check against crossing
    traffic (within ``crossing_radius_m`` inside ``crossing_horizon_s``), meant for intersections.
    """

    enabled: bool = True
    ttc_s: float = Field(default=3.0, gt=0, le=20)
    min_gap_m: float = Field(default=6.0, ge=0, le=100)
    headway_s: float = Field(default=0.9, ge=0, le=10)
    lane_width_m: float = Field(default=4.0, gt=0, le=10)
    vehicle_length_m: float = Field(default=5.0, gt=0, le=20)
    crossing: bool | None = Field(default=None, description="default: on for intersection, off elsewhere")
    crossing_radius_m: float = Field(default=6.0, gt=0, le=50)
    crossing_horizon_s: float = Field(default=3.0, gt=0, le=20)


class DrivingEvalSpec(Strict):
    """Closed-loop evaluation: how many seeded episodes (seeds ``seed``, ``seed``+1, …)."""

    episodes: int = Field(default=20, ge=1, le=10_000)
    seed: int = Field(default=10_000, ge=0, description="first evaluation seed (training uses seeds below it)")
    baselines: bool = Field(default=True, description="also drive the random and expert baselines")
    replay_frames: int = Field(default=60, ge=2, le=600, description="frames in the report's replay GIF")


class DrivingOptimizeSpec(Strict):
    """Export: int8 dynamic quantization kept only if it picks the same action as fp32 often enough."""

    quantize: bool = True
    min_int8_agreement: float = Field(default=0.99, gt=0, le=1)
    max_logit_diff: float = Field(default=1e-3, gt=0)


class DrivingGates(ReleaseGates):
    """Release gates ``aiforge ship`` checks on a driving bundle (closed loop, with the shield on)."""

    kind: ClassVar[str] = "driving"

    max_collision_rate: float | None = Field(default=None, ge=0, le=1)
    min_mean_speed: float | None = Field(default=None, ge=0, description="m/s")
    max_p99_act_latency_ms: float | None = Field(default=None, gt=0)
    max_shield_override_rate: float | None = Field(default=None, ge=0, le=1, description="overrides per step")


class DrivingServeSpec(ServeSpec):
    """Serving settings; camera observations are larger than texts, so the body limit is raised."""

    max_body_bytes: int = Field(default=4 << 20, gt=0)


class DrivingSpec(BaseSpec):
    """A driving policy for a highway-env scenario."""

    task: Literal["driving"] = "driving"
    env: DrivingEnvSpec = DrivingEnvSpec()
    train: DrivingTrainSpec = DrivingTrainSpec()
    shield: ShieldSpec = ShieldSpec()
    eval: DrivingEvalSpec = DrivingEvalSpec()
    optimize: DrivingOptimizeSpec = DrivingOptimizeSpec()
    serve: DrivingServeSpec = DrivingServeSpec()
    gates: DrivingGates = DrivingGates()

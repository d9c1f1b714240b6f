"""Closed-loop evaluation of a bundle (torch-free): its runtime drives seeded episodes beside the baselines.

Policies: ``random``, ``expert`` (the rule-based planner it imitated), ``aiforge`` (the bundle's
graph without the shield) and ``aiforge+shield`` (the bundle as served: graph, then shield).
The numbers per policy are a :class:`~aiforge.tasks.driving.rollout.Summary`; the first
episode of ``aiforge+shield`` is recorded for the report's replay.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aiforge.tasks.driving.env import env_info
from aiforge.tasks.driving.expert import Expert
from aiforge.tasks.driving.rollout import Episode, RandomPolicy, Summary, run_episodes, summarize
from aiforge.tasks.driving.runtime import DrivingRuntime, Observation
from aiforge.tasks.driving.spec import DrivingEnvSpec

__all__ = ["POLICIES", "ClosedLoop", "ExpertDriver", "RuntimePolicy", "closed_loop"]

POLICIES = ("random", "expert", "aiforge", "aiforge+shield")


class ExpertDriver:
    """The expert as a policy."""

    name = "expert"

    def __init__(self, spec: DrivingEnvSpec) -> None:
        self.expert = Expert(actions=env_info(spec).actions, scenario=spec.scenario)

    def act(self, env: Any, radar: np.ndarray, observation: np.ndarray) -> int:
        return self.expert.act(env, radar)


class RuntimePolicy:
    """The bundle's runtime driving: its graph and, with ``shield``, its shield (as when served)."""

    def __init__(self, rt: DrivingRuntime, *, shield: bool) -> None:
        self.rt, self.shield = rt, shield
        self.name = "aiforge+shield" if shield else "aiforge"
        self.overrode = False

    def act(self, env: Any, radar: np.ndarray, observation: np.ndarray) -> int:
        item = Observation(np.asarray(observation), radar if self.shield else None)
        [out] = self.rt.run_batch([item])
        self.overrode = out.shield_overrode
        return out.action_index


@dataclass
class ClosedLoop:
    """Per-policy summaries and episodes of one evaluation."""

    env: DrivingEnvSpec
    seeds: list[int]
    summaries: dict[str, Summary]
    episodes: dict[str, list[Episode]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON: the env, the seeds, each policy's summary and its episodes."""
        return {"env": self.env.model_dump(mode="json"), "seeds": [self.seeds[0], self.seeds[-1]],
                "policies": {k: v.to_dict() for k, v in self.summaries.items()},
                "episodes": {k: [e.to_dict() for e in eps] for k, eps in self.episodes.items()}}


def closed_loop(rt: DrivingRuntime, env: DrivingEnvSpec, *, episodes: int, seed: int,
                policies: tuple[str, ...] = POLICIES, record: int = 0) -> ClosedLoop:
    """Drive ``episodes`` seeded episodes (seeds ``seed``...) with each of ``policies``."""
    seeds = list(range(seed, seed + episodes))
    drivers: dict[str, Any] = {"random": RandomPolicy(len(rt.labels), seed), "expert": ExpertDriver(env),
                               "aiforge": RuntimePolicy(rt, shield=False),
                               "aiforge+shield": RuntimePolicy(rt, shield=True)}
    summaries, eps = {}, {}
    for name in policies:
        keep = record if name == "aiforge+shield" else 0
        eps[name] = run_episodes(drivers[name], env, seeds=seeds, record=keep)
        summaries[name] = summarize(name, eps[name])
    return ClosedLoop(env, seeds, summaries, eps)

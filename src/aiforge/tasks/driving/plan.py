"""What ``aiforge eval --data`` takes for a driving bundle: a drive plan (YAML), or a driving aiforge.yaml.

A plan says which episodes to drive: ``episodes``, ``seed``, ``policies``, an ``env`` block
(changes to the bundle's own env: another scenario, density, duration…), ``replay_frames`` and
the ``output`` folder for report.html and replay.gif. A driving ``aiforge.yaml`` works too: its
``env`` and ``eval`` blocks are used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from aiforge.errors import DataError
from aiforge.spec import Strict
from aiforge.tasks.driving.spec import DrivingEnvSpec, DrivingSpec

__all__ = ["DrivePlan", "read_plan"]

_POLICIES = ("random", "expert", "aiforge", "aiforge+shield")


class DrivePlan(Strict):
    """Seeded episodes to drive and where to write the report."""

    episodes: int = Field(default=20, ge=1, le=10_000)
    seed: int = Field(default=10_000, ge=0)
    policies: list[str] = Field(default_factory=lambda: list(_POLICIES), min_length=1)
    env: dict[str, Any] = Field(default_factory=dict)
    replay_frames: int = Field(default=60, ge=0, le=600)
    output: Path | None = None

    def env_for(self, bundle_env: dict[str, Any]) -> DrivingEnvSpec:
        """The bundle's env with this plan's changes.

        Raises:
            DataError: the changed env is not valid (names the key).
        """
        try:
            return DrivingEnvSpec.model_validate({**bundle_env, **self.env})
        except ValidationError as exc:
            err = exc.errors()[0]
            raise DataError(f"env.{'.'.join(map(str, err['loc']))}: {err['msg']}") from None


def read_plan(path: Path) -> DrivePlan:
    """The plan in ``path`` (a plan YAML, or a driving aiforge.yaml).

    Raises:
        DataError: the file is missing, not YAML, or not a valid plan (names the field and what is allowed).
    """
    if not path.is_file():
        raise DataError(f"{path}: not found; driving bundles are evaluated on a drive plan YAML (episodes, seed, "
                        "policies, env, output) or a driving aiforge.yaml.")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not YAML ({exc}).") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a mapping of plan keys, got {type(raw).__name__}.")
    if raw.get("task") == "driving":
        spec = DrivingSpec.from_yaml(path)
        return DrivePlan(episodes=spec.eval.episodes, seed=spec.eval.seed, env=spec.env.model_dump(mode="json"),
                         replay_frames=spec.eval.replay_frames)
    try:
        plan = DrivePlan.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise DataError(f"{path}: {'.'.join(map(str, err['loc']))}: {err['msg']} (plan keys: "
                        f"{', '.join(DrivePlan.model_fields)}).") from None
    unknown = [p for p in plan.policies if p not in _POLICIES]
    if unknown:
        raise DataError(f"{path}: policies: unknown {unknown}; choose from {list(_POLICIES)}.")
    return plan

"""Helpers for the driving tests: one tiny trained highway bundle per process (cached), radar rows to build."""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aiforge.app import App
from aiforge.bundle.parts import ExportResult
from aiforge.spec import BaseSpec

__all__ = ["TrainedDriving", "radar", "tiny_spec", "trained_driving"]


def tiny_spec(name: str = "tiny-drive", **sections: dict[str, Any]) -> dict[str, Any]:
    """A highway kinematics spec that trains in seconds: 8-step episodes, 2 expert drives, 1 DAgger round."""
    spec: dict[str, Any] = {
        "name": name, "task": "driving",
        "env": {"scenario": "highway", "observation": "kinematics", "duration": 8},
        "train": {"expert_episodes": 2, "dagger_rounds": 1, "dagger_episodes": 1, "epochs": 10, "threads": 1,
                  "min_updates": 300},
        "eval": {"episodes": 1, "baselines": False, "replay_frames": 6},
    }
    spec.update(sections)
    return spec


@dataclass(frozen=True)
class TrainedDriving:
    home: Path
    export: ExportResult

    @property
    def path(self) -> Path:
        return Path(self.export.path)

    @property
    def name(self) -> str:
        return self.export.record.name


@functools.cache
def trained_driving() -> TrainedDriving:
    """The tiny highway bundle, trained and registered once per process in its own home."""
    home = Path(tempfile.mkdtemp(prefix="aiforge-driving-"))
    app = App(BaseSpec.from_dict(tiny_spec()), home=home)
    app.fit(progress=False)
    return TrainedDriving(home, app.export())


def radar(*others: tuple[float, float, float, float], ego_speed: float = 25.0, ego_y: float = 4.0,
          rows: int = 7) -> np.ndarray:
    """Kinematics rows (presence, x, y, vx, vy, cos_h, sin_h): the ego car heading +x, then ``others``
    as (dx, dy, dvx, dvy) relative to it; the remaining rows absent."""
    out = np.zeros((rows, 7), dtype=np.float32)
    out[0] = [1, 100.0, ego_y, ego_speed, 0, 1, 0]
    for i, (dx, dy, dvx, dvy) in enumerate(others, start=1):
        out[i] = [1, dx, dy, dvx, dvy, 1, 0]
    return out

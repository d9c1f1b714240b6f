"""What a driving fit produces: the imitation result (network, labelled states, env steps, time)."""

from __future__ import annotations

from dataclasses import dataclass

from aiforge.tasks.driving.env import EnvInfo
from aiforge.tasks.driving.spec import DrivingSpec
from aiforge.tasks.driving.training import ImitationResult

__all__ = ["DrivingFitResult"]


@dataclass
class DrivingFitResult:
    """The trained policy network and how it was trained (closed-loop numbers come at export)."""

    spec: DrivingSpec
    info: EnvInfo
    imitation: ImitationResult

    @property
    def train_seconds(self) -> float:
        return self.imitation.train_seconds

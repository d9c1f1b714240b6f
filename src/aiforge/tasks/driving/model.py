"""Perception + policy networks (PyTorch): an MLP encoder for kinematics/lidar, a small CNN for camera frames.

Each network takes the raw observation (float32; camera pixels 0-255) and returns one logit per
meta-action; scaling is inside the graph, so the exported ONNX file takes exactly what the
simulator (or a client) gives. The stages are named: ``perception`` (encoder) then ``policy``
(the action head), each a swappable ``nn.Module``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DrivingNet", "build_net"]

# kinematics rows: presence, x, y, vx, vy, cos_h, sin_h (metres, m/s)
_KINEMATIC_SCALE = (1.0, 100.0, 20.0, 20.0, 20.0, 1.0, 1.0)


class DrivingNet(nn.Module):
    """``observation -> logits``: a scaling step, a perception encoder and a policy head."""

    def __init__(self, perception: nn.Module, policy: nn.Module, scale: torch.Tensor, n_actions: int) -> None:
        super().__init__()
        self.perception = perception
        self.policy = policy
        self.n_actions = n_actions
        self.scale: torch.Tensor
        self.register_buffer("scale", scale)

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        x = observation.float() * self.scale
        out: torch.Tensor = self.policy(self.perception(x))
        return out


def _mlp_encoder(n_in: int, hidden: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())


def _cnn_encoder(stack: int, width: int, height: int, hidden: int) -> nn.Module:
    conv = nn.Sequential(nn.Conv2d(stack, 16, 8, stride=4), nn.ReLU(), nn.Conv2d(16, 32, 4, stride=2), nn.ReLU(),
                         nn.Conv2d(32, 32, 3, stride=1), nn.ReLU(), nn.Flatten())
    with torch.no_grad():
        n = conv(torch.zeros(1, stack, width, height)).shape[1]
    return nn.Sequential(conv, nn.Linear(n, hidden), nn.ReLU())


def build_net(*, mode: str, shape: tuple[int, ...], n_actions: int, hidden: int, mask_ego_x: bool) -> DrivingNet:
    """The network for an observation ``mode`` of ``shape``.

    ``mask_ego_x`` zeroes the ego car's absolute x (on an endless highway it only grows).
    """
    if mode == "camera":
        stack, width, height = shape
        scale = torch.full((1, 1, 1), 1.0 / 255.0)
        perception = _cnn_encoder(stack, width, height, hidden)
    elif mode == "kinematics":
        rows, cols = shape
        scale = 1.0 / torch.tensor(_KINEMATIC_SCALE[:cols]).repeat(rows, 1)
        if mask_ego_x:
            scale[0, 1] = 0.0
        perception = _mlp_encoder(rows * cols, hidden)
    else:
        rows, cols = shape
        scale = torch.ones(rows, cols)
        perception = _mlp_encoder(rows * cols, hidden)
    return DrivingNet(perception, nn.Linear(hidden, n_actions), scale, n_actions)

"""Perception + policy networks (PyTorch): an MLP encoder for kinematics/lidar, a small CNN for camera frames.

Each network takes the raw observation (float32; camera pixels 0-255) and returns one logit per
meta-action. On roads with lanes, kinematics perception is :class:`LaneFeatures` (gaps and
relative speeds ahead and behind in each lane, computed in the graph) before the MLP. Scaling is
inside the graph, so the exported ONNX file takes exactly what the simulator (or a client) gives.
The stages are named: ``perception`` (encoder) then ``policy`` (the action head), each a swappable
``nn.Module``.

Camera networks (:class:`CameraNet`) add a third stage, the *perception head*: a linear map from
the CNN's image features to the 22 :class:`LaneFeatures` of the frame. At training time the
simulator gives those features for free (the radar rows of the same step), so the head is trained
to predict them (privileged distillation, "learning by cheating") and the policy reads the
predicted features beside the image features. The exported graph outputs both ``logits`` and
``features``; the served car needs only its camera.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LANE_FEATURE_NAMES", "CameraNet", "DrivingNet", "LaneFeatures", "build_net"]

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


def _lane_feature_names() -> tuple[str, ...]:
    names = []
    for lane in ("left", "ego", "right"):
        for side in ("ahead", "behind"):
            names += [f"{lane}_{side}_gap", f"{lane}_{side}_rel_speed", f"{lane}_{side}_inv_ttc"]
    return (*names, "ego_y_lanes", "ego_vx", "ego_vy", "ego_sin_heading")


# what LaneFeatures (and a camera bundle's ``features`` output) gives, in order
LANE_FEATURE_NAMES = _lane_feature_names()


class LaneFeatures(nn.Module):
    """Road perception from kinematics rows: ``(n, rows, 7)`` raw (metres, m/s) -> ``(n, 22)`` features.

    For the ego lane and its left and right neighbours: the gap to the nearest vehicle ahead and
    behind (``far`` when none is observed), their relative speeds and the inverse time to
    collision; then the ego car's lane position, speed and heading. These are the quantities an
    IDM/MOBIL driver decides on; as graph ops (masks, min, argmin, gather) they export to ONNX.
    The rows come sorted by distance, so "the car ahead in my lane" can be in any row: a flat MLP
    has to learn that once per row from a few thousand states (it did not), this finds it.
    """

    n_features = 22

    def __init__(self, *, lane_width: float = 4.0, far: float = 100.0, length: float = 5.0) -> None:
        super().__init__()
        self.lane_width, self.far, self.length = lane_width, far, length

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ego, others = x[:, 0, :], x[:, 1:, :]
        present = others[:, :, 0] > 0.5
        dx, dy, dvx = others[:, :, 1], others[:, :, 2], others[:, :, 3]
        far = torch.full_like(dx, self.far)
        out = []
        for k in (-1.0, 0.0, 1.0):
            inlane = present & ((dy - k * self.lane_width).abs() < self.lane_width / 2)
            for ahead in (True, False):
                side = inlane & ((dx > 0) if ahead else (dx <= 0))
                gaps = torch.where(side, (dx if ahead else -dx) - self.length, far).clamp(min=0.0, max=self.far)
                gap, idx = gaps.min(dim=1, keepdim=True)
                seen = (gap < self.far).to(x.dtype)
                rel = torch.gather(dvx, 1, idx) * seen  # its speed minus ours (m/s)
                closing = (-rel if ahead else rel).clamp(min=0.0)
                out += [gap / self.far, rel / 10.0, closing / (gap + 1.0)]
        out += [ego[:, 2:3] / self.lane_width, ego[:, 3:4] / 30.0, ego[:, 4:5] / 5.0, ego[:, 6:7]]
        return torch.cat(out, dim=1)


class CameraNet(DrivingNet):
    """``frames -> logits`` through a CNN, a perception head (predicted lane features) and the policy.

    ``perception`` maps the scaled frames to image features ``h``; ``head`` maps ``h`` to the
    :class:`LaneFeatures` of the frame; ``policy`` reads ``[features, h]``.
    """

    def __init__(self, perception: nn.Module, head: nn.Module, policy: nn.Module, scale: torch.Tensor,
                 n_actions: int) -> None:
        super().__init__(perception, policy, scale, n_actions)
        self.head = head

    def logits_and_features(self, observation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.perception(observation.float() * self.scale)
        features: torch.Tensor = self.head(h)
        logits: torch.Tensor = self.policy(torch.cat([features, h], dim=1))
        return logits, features

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        return self.logits_and_features(observation)[0]


def _mlp_encoder(n_in: int, hidden: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())


def _cnn_encoder(stack: int, width: int, height: int, hidden: int) -> nn.Module:
    conv = nn.Sequential(nn.Conv2d(stack, 16, 8, stride=4), nn.ReLU(), nn.Conv2d(16, 32, 4, stride=2), nn.ReLU(),
                         nn.Conv2d(32, 32, 3, stride=1), nn.ReLU(), nn.Flatten())
    with torch.no_grad():
        n = conv(torch.zeros(1, stack, width, height)).shape[1]
    return nn.Sequential(conv, nn.Linear(n, hidden), nn.ReLU())


def build_net(*, mode: str, shape: tuple[int, ...], n_actions: int, hidden: int, mask_ego_x: bool,
              lanes: bool = False) -> DrivingNet:
    """The network for an observation ``mode`` of ``shape``.

    ``mask_ego_x`` zeroes the ego car's absolute x (on an endless highway it only grows);
    ``lanes`` (roads with lanes, kinematics): :class:`LaneFeatures` perception instead of a flat MLP.
    """
    perception: nn.Module
    if mode == "camera":
        stack, width, height = shape
        scale = torch.full((1, 1, 1), 1.0 / 255.0)
        n = LaneFeatures.n_features
        policy = nn.Sequential(nn.Linear(n + hidden, hidden), nn.ReLU(), nn.Linear(hidden, n_actions))
        return CameraNet(_cnn_encoder(stack, width, height, hidden), nn.Linear(hidden, n), policy, scale,
                         n_actions)
    if mode == "kinematics":
        rows, cols = shape
        scale = 1.0 / torch.tensor(_KINEMATIC_SCALE[:cols]).repeat(rows, 1)
        if mask_ego_x:
            scale[0, 1] = 0.0
        if lanes:  # roads with lanes: the lane features, then an MLP
            perception = nn.Sequential(LaneFeatures(), nn.Linear(LaneFeatures.n_features, hidden), nn.ReLU(),
                                       nn.Linear(hidden, hidden), nn.ReLU())
            return DrivingNet(perception, nn.Linear(hidden, n_actions), torch.ones(rows, cols), n_actions)
        perception = _mlp_encoder(rows * cols, hidden)
    else:
        rows, cols = shape
        scale = torch.ones(rows, cols)
        perception = _mlp_encoder(rows * cols, hidden)
    return DrivingNet(perception, nn.Linear(hidden, n_actions), scale, n_actions)

"""The safety shield: rule-based time-to-collision and distance checks on the observed state (numpy only).

It reads the kinematics rows of the nearby vehicles (ego first, the others relative to it:
``presence, x, y, vx, vy, cos_h, sin_h``), turns them into the ego car's frame, and overrides a
proposed meta-action that breaks a rule:

- ``brake``: a vehicle ahead in the ego lane is within ``min_gap_m`` or closes in under ``ttc_s``
  -> anything but ``SLOWER`` becomes ``SLOWER``, except an *evasive lane change*: a change into
  a neighbour lane that passes the ``lane`` rule and is known to exist (left: the ego car is not in
  the leftmost lane, y > half a lane width; right: a vehicle is observed in it) is let through.
  Braking is not always possible (highway-env's slowest target speed is 20 m/s on merge: a slower
  car that merges in ahead is hit whatever the shield does), and overriding the escape into a
  free lane with ``SLOWER`` caused most of the shielded merge collisions;
- ``headway``: ``FASTER`` with a vehicle ahead inside ``headway_s`` x speed (or closing in under
  2 x ``ttc_s``) -> ``IDLE``;
- ``lane``: a lane change whose target lane has a vehicle alongside, ahead or behind closer
  than the gap or TTC limits -> keep the lane (``IDLE``, or ``SLOWER`` under ``brake``);
- ``crossing`` (intersections): a vehicle whose straight-line closest approach comes within
  ``crossing_radius_m`` inside ``crossing_horizon_s`` -> ``SLOWER``.

The rules and thresholds are plain data (:class:`ShieldRules`), stored in the bundle's
``pipeline.json``; the served runtime runs this same module.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["ShieldDecision", "ShieldRules", "shield_actions"]

_EPS = 1e-6


@dataclass(frozen=True)
class ShieldRules:
    """Thresholds of the shield's rules (see the module docstring)."""

    ttc_s: float = 3.0
    min_gap_m: float = 6.0
    headway_s: float = 0.9
    lane_width_m: float = 4.0
    vehicle_length_m: float = 5.0
    crossing: bool = False
    crossing_radius_m: float = 6.0
    crossing_horizon_s: float = 3.0

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (pipeline.json ``shield.rules``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ShieldRules:
        """The rules ``to_dict`` wrote (unknown keys are an error)."""
        return cls(**raw)


@dataclass(frozen=True)
class ShieldDecision:
    """The actions after the shield, whether each was overridden, the rule that fired and the TTC seen."""

    actions: np.ndarray  # (n,) int64
    overrode: np.ndarray  # (n,) bool
    reasons: list[str]  # "" where not overridden
    min_ttc_s: np.ndarray  # (n,) time to collision with the vehicle ahead (inf: none closing in)


def _ego_frame(radar: np.ndarray) -> tuple[np.ndarray, ...]:
    """Relative positions/velocities of the other rows in the ego car's heading frame, and ego speed."""
    ego = radar[:, 0, :]
    heading = np.arctan2(ego[:, 6], ego[:, 5])
    heading = np.where((np.abs(ego[:, 5]) + np.abs(ego[:, 6])) > _EPS, heading, np.arctan2(ego[:, 4], ego[:, 3]))
    c, s = np.cos(heading)[:, None], np.sin(heading)[:, None]
    others = radar[:, 1:, :]
    present = others[:, :, 0] > 0.5
    px, py = others[:, :, 1], others[:, :, 2]
    vx, vy = others[:, :, 3], others[:, :, 4]
    fx, fy = c * px + s * py, -s * px + c * py
    fvx, fvy = c * vx + s * vy, -s * vx + c * vy
    speed = np.hypot(ego[:, 3], ego[:, 4])
    return present, fx, fy, fvx, fvy, speed


def _ttc(gap: np.ndarray, closing: np.ndarray) -> np.ndarray:
    return np.where(closing > _EPS, np.maximum(gap, 0.0) / np.maximum(closing, _EPS), np.inf)


def shield_actions(radar: np.ndarray, proposed: np.ndarray, *, rules: ShieldRules,
                   actions: tuple[str, ...]) -> ShieldDecision:
    """Check each proposed action against the rules on its kinematics rows; override the unsafe ones.

    ``radar`` is (n, vehicles, 7) float32, ``proposed`` (n,) action indices into ``actions``
    (highway-env meta-action names).
    """
    radar = np.asarray(radar, dtype=np.float64)
    proposed = np.asarray(proposed, dtype=np.int64)
    index = {name: i for i, name in enumerate(actions)}
    present, fx, fy, fvx, fvy, speed = _ego_frame(radar)
    length, half = rules.vehicle_length_m, rules.lane_width_m * 0.6
    # ahead in the ego lane: gap bumper to bumper, closing speed = -relative vx
    ahead = present & (fx > 0) & (np.abs(fy) < half)
    gap = np.where(ahead, fx - length, np.inf)
    ttc_ahead = np.where(ahead, _ttc(gap, -fvx), np.inf)
    min_gap = gap.min(axis=1, initial=np.inf)
    min_ttc = ttc_ahead.min(axis=1, initial=np.inf)
    brake = (min_gap < rules.min_gap_m) | (min_ttc < rules.ttc_s)
    headway = (min_gap < rules.headway_s * speed) | (min_ttc < 2 * rules.ttc_s)
    crossing = np.zeros_like(brake)
    if rules.crossing:
        vv = fvx ** 2 + fvy ** 2
        t_star = np.where(vv > _EPS, -(fx * fvx + fy * fvy) / np.maximum(vv, _EPS), 0.0)
        t_star = np.clip(t_star, 0.0, rules.crossing_horizon_s)
        closest = np.hypot(fx + fvx * t_star, fy + fvy * t_star)
        crossing = (present & (fx > -length) & (closest < rules.crossing_radius_m)).any(axis=1)

    def lane_unsafe(side: float) -> np.ndarray:
        inlane = present & (np.abs(fy - side * rules.lane_width_m) < half)
        front = inlane & (fx >= 0)
        rear = inlane & (fx < 0)
        front_gap, rear_gap = fx - length, -fx - length
        bad_front = front & ((front_gap < rules.min_gap_m) | (_ttc(front_gap, -fvx) < rules.ttc_s))
        bad_rear = rear & ((rear_gap < rules.min_gap_m) | (_ttc(rear_gap, fvx) < rules.ttc_s))
        return np.asarray((bad_front | bad_rear).any(axis=1))

    def lane_exists(side: float) -> np.ndarray:
        if side < 0:  # the ego row is absolute: lane k's centre is at y = k x lane width
            return np.asarray(radar[:, 0, 2] > rules.lane_width_m / 2)
        return np.asarray((present & (np.abs(fy - side * rules.lane_width_m) < half)).any(axis=1))

    out = proposed.copy()
    reasons = [""] * len(proposed)
    slower, idle = index.get("SLOWER"), index.get("IDLE")
    lanes = {index[k]: v for k, v in (("LANE_LEFT", -1.0), ("LANE_RIGHT", 1.0)) if k in index}
    unsafe_lane = {a: lane_unsafe(side) for a, side in lanes.items()}
    escape = {a: lane_exists(side) for a, side in lanes.items()}
    for i, a in enumerate(proposed.tolist()):
        choice, why = a, ""
        if a in unsafe_lane and unsafe_lane[a][i]:
            choice, why = (slower, "lane+brake") if brake[i] else (idle, "lane")
        elif a in escape and escape[a][i]:
            pass  # a safe lane change into a lane that exists: the way out, braking or not
        elif a != slower and brake[i]:
            choice, why = slower, "brake"
        elif a != slower and crossing[i]:
            choice, why = slower, "crossing"
        elif a == index.get("FASTER") and headway[i]:
            choice, why = idle, "headway"
        if choice is not None and choice != a:
            out[i], reasons[i] = choice, why
    return ShieldDecision(out, out != proposed, reasons, min_ttc)

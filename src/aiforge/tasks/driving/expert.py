"""The expert driver the policy imitates: a rule-based planner over the simulator's state.

On roads with lanes (highway, merge) it is IDM/MOBIL-style: keep a time headway to the vehicle
ahead (brake when the gap or the time-to-collision gets short, accelerate when the road ahead is
open), and change lanes when a neighbour lane lets it drive faster (or is the right-hand lane at
no cost) and the gaps ahead and behind there are safe. At intersections it picks the fastest
target speed whose straight-line path keeps clear of every observed vehicle over a few seconds.
It reads privileged simulator state (lanes, neighbours), which the learned policy never sees.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["Expert"]

_FAR = 1e3


class Expert:
    """A rule-based driver for highway-env's meta-actions; ``act(env, radar)`` gives an action index."""

    name = "expert"

    def __init__(self, *, actions: tuple[str, ...], scenario: str) -> None:
        self.actions = actions
        self.scenario = scenario
        self.index = {a: i for i, a in enumerate(actions)}

    def act(self, env: Any, radar: np.ndarray) -> int:
        """The expert's action for the env's current state (``radar``: its kinematics rows)."""
        if self.scenario == "intersection":
            return self._crossing(env, radar)
        return self._lanes(env)

    # --- roads with lanes ------------------------------------------------------------------

    def _lanes(self, env: Any) -> int:
        u = env.unwrapped
        ego, road = u.vehicle, u.road
        length = float(ego.LENGTH)
        v = float(ego.speed)

        def probe(lane_index: Any) -> tuple[float, float, float, float]:
            front, rear = road.neighbour_vehicles(ego, lane_index)
            lane = road.network.get_lane(lane_index)
            s = lane.local_coordinates(ego.position)[0]
            fg = lane.local_coordinates(front.position)[0] - s - length if front is not None else _FAR
            rg = s - lane.local_coordinates(rear.position)[0] - length if rear is not None else _FAR
            return (float(fg), float(front.speed) if front is not None else 40.0,
                    float(rg), float(rear.speed) if rear is not None else 0.0)

        top = float(ego.target_speeds[-1])

        bottom = float(ego.target_speeds[0])

        def value(fg: float, fv: float) -> float:
            if fg > 60:
                return top
            if fv < bottom and fg < 30:  # stuck behind a car slower than the slowest target speed
                return fv - 5.0
            return min(top, fv + max(0.0, fg - 25) / 10)

        fg, fv, _, _ = probe(ego.target_lane_index)
        ttc = fg / (v - fv) if v > fv + 1e-3 else math.inf
        if ego.lane_index == ego.target_lane_index and "LANE_LEFT" in self.index:
            here = value(fg, fv)
            best, best_gain = None, 0.0
            for side in road.network.side_lanes(ego.lane_index):
                if not road.network.get_lane(side).is_reachable_from(ego.position):
                    continue
                sfg, sfv, srg, srv = probe(side)
                safe = sfg > 8 + max(0.0, v - sfv) * 2.5 and srg > 6 + max(0.0, srv - v) * 2.5
                if not safe:
                    continue
                right = side[2] > ego.lane_index[2]
                gain = value(sfg, sfv) - here + (0.6 if right else -0.6)
                if gain > best_gain + (1.0 if not right else 0.0):
                    best, best_gain = side, gain
            if best is not None:
                return self.index["LANE_RIGHT" if best[2] > ego.lane_index[2] else "LANE_LEFT"]
        if fg < 6 + 0.7 * v or ttc < 4.0:
            return self.index["SLOWER"]
        can_speed_up = int(ego.speed_index) < len(ego.target_speeds) - 1
        if can_speed_up and fg > 10 + 1.3 * v and ttc > 8.0:
            return self.index["FASTER"]
        return self.index["IDLE"]

    # --- intersections ---------------------------------------------------------------------

    def _crossing(self, env: Any, radar: np.ndarray) -> int:
        ego = env.unwrapped.vehicle
        speeds = [float(s) for s in ego.target_speeds]
        k = int(ego.speed_index)
        heading = np.array([math.cos(ego.heading), math.sin(ego.heading)])
        ego_v = heading * float(ego.speed)
        others = radar[1:][radar[1:, 0] > 0.5]
        p, v_abs = others[:, 1:3].astype(np.float64), others[:, 3:5].astype(np.float64) + ego_v

        def clear(speed: float) -> bool:
            rel = v_abs - heading * speed
            for t in np.linspace(0.0, 4.0, 17):
                d = np.hypot(*(p + rel * t).T)
                if (d < 8.0).any():
                    return False
            return True

        if k + 1 < len(speeds) and clear(speeds[k + 1]):
            return self.index["FASTER"]
        if clear(speeds[k]):
            return self.index["IDLE"]
        return self.index["SLOWER"]

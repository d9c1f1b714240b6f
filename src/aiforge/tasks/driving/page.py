"""The driving kind's playground page: the episode replay, the shield's interventions and a try-it (``panel.js``).

The replay is the bundle's ``replay.gif`` and ``replay.json`` (each recorded step's observation,
radar, action taken and whether the shield overrode it), fetched through the verified bundle-file
route; the interventions come from the closed-loop evaluation in ``metrics.json``. The try-it posts
an observation (a recorded step, or for kinematics bundles a constructed unsafe state) to the public
``POST /v1/models/{name}/act`` route.
"""

from __future__ import annotations

import json
from typing import Any

from aiforge.bundle.runtime import Runtime
from aiforge.serve.web.page import KindPage
from aiforge.tasks.driving.report import REPLAY_JSON
from aiforge.tasks.driving.runtime import DrivingRuntime

__all__ = ["PAGE", "examples", "unsafe_state"]

REPLAY_GIF = "replay.gif"


def unsafe_state(runtime: DrivingRuntime) -> list[list[float]]:
    """Kinematics rows of the ego car at 25 m/s with a car 10 m ahead in its lane closing at 10 m/s."""
    rows, features = runtime.radar_shape
    out = [[0.0] * features for _ in range(rows)]
    out[0][:7] = [1.0, 100.0, 4.0, 25.0, 0.0, 1.0, 0.0]
    if rows > 1:
        out[1][:7] = [1.0, 10.0, 0.0, -10.0, 0.0, 1.0, 0.0]
    return out


def _interventions(runtime: Runtime) -> list[dict[str, Any]]:
    """Per evaluated episode of each shielded policy: its seed, steps, crash and the overridden steps."""
    try:
        metrics = json.loads((runtime.path / "metrics.json").read_text(encoding="utf-8"))
        episodes = metrics["closed_loop"]["episodes"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [{"policy": policy, "seed": e.get("seed"), "steps": e.get("steps"), "crashed": e.get("crashed"),
             "overrides": e.get("overrides"), "overridden_steps": e.get("overridden_steps", [])}
            for policy, eps in episodes.items() if "shield" in policy for e in eps]


def examples(runtime: Runtime) -> dict[str, Any]:
    """The replay's files, the interventions and the example observations the panel offers."""
    if not isinstance(runtime, DrivingRuntime):
        return {}
    files = runtime.manifest.files
    examples: list[dict[str, Any]] = []
    if runtime.mode == "kinematics":
        examples.append({"name": "car braking 10 m ahead (unsafe)", "body": {"observation": unsafe_state(runtime)}})
    elif runtime.shape:
        examples.append({"name": "car braking 10 m ahead (unsafe), black camera frame",
                         "body": {"observation": _zeros(runtime.shape), "radar": unsafe_state(runtime)}})
    return {"replay_gif": REPLAY_GIF if REPLAY_GIF in files else None,
            "replay_json": REPLAY_JSON if REPLAY_JSON in files else None,
            "interventions": _interventions(runtime), "mode": runtime.mode, "shape": list(runtime.shape),
            "actions": runtime.labels, "shield_enabled": runtime.shield_enabled, "examples": examples}


def _zeros(shape: tuple[int, ...]) -> Any:
    out: Any = 0
    for d in reversed(shape):
        out = [out] * d
    return out


PAGE = KindPage("aiforge.tasks.driving", examples=examples)

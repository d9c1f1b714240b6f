"""Export a driving policy: the ONNX graph (observation -> logits), int8 if it keeps the actions, the shield.

A camera policy's graph has a second output, ``features`` ((batch, 22): its perception head's
lane features, named in ``pipeline.json`` ``perception.features``).

The fp32 graph is checked against PyTorch on the labelled training states; the int8 copy
(dynamic quantization, the shared recipes) ships only when its greedy action agrees with fp32's
on ``optimize.min_int8_agreement`` of them. Then the staged bundle drives the closed-loop
evaluation through the torch-free runtime (what ``aiforge eval`` reruns), which fills
``metrics.json``, ``report.html``, ``replay.gif`` and ``replay.json`` (the replay's recorded steps).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from aiforge.bundle.format import BundleManifest
from aiforge.bundle.parts import BundleParts, Int8Parity, Parity
from aiforge.bundle.runtime import onnx_session
from aiforge.errors import ExportError
from aiforge.optimize.onnx_export import export_onnx
from aiforge.optimize.quantize import quantize_with_parity
from aiforge.tasks.driving.closedloop import POLICIES, closed_loop
from aiforge.tasks.driving.env import KINEMATIC_FEATURES
from aiforge.tasks.driving.fitted import DrivingFitResult
from aiforge.tasks.driving.model import LANE_FEATURE_NAMES, CameraNet
from aiforge.tasks.driving.report import REPLAY_JSON, write_gif, write_replay, write_report
from aiforge.tasks.driving.runtime import DrivingRuntime
from aiforge.tasks.driving.shield import ShieldRules
from aiforge.tasks.driving.spec import DrivingSpec

__all__ = ["FP32_GRAPH", "INT8_GRAPH", "shield_rules", "write_driving_bundle"]

FP32_GRAPH = "policy.onnx"
INT8_GRAPH = "policy.int8.onnx"


def shield_rules(spec: DrivingSpec) -> ShieldRules:
    """The shield's rules from the spec (crossing checks on by default at intersections)."""
    s = spec.shield
    crossing = s.crossing if s.crossing is not None else spec.env.scenario == "intersection"
    return ShieldRules(ttc_s=s.ttc_s, min_gap_m=s.min_gap_m, headway_s=s.headway_s, lane_width_m=s.lane_width_m,
                       vehicle_length_m=s.vehicle_length_m, crossing=crossing,
                       crossing_radius_m=s.crossing_radius_m, crossing_horizon_s=s.crossing_horizon_s)


class _WithFeatures(nn.Module):
    """A camera net exported with both outputs (the argument name is the graph's input name)."""

    def __init__(self, net: CameraNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, observation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net.logits_and_features(observation)


def _logits(path: Path, x: np.ndarray) -> np.ndarray:
    session = onnx_session(path, threads=1)
    return np.concatenate([session.run(["logits"], {"observation": x[i:i + 256]})[0] for i in range(0, len(x), 256)])


def _export(result: DrivingFitResult, staged: Path) -> tuple[Parity, str]:
    spec, net = result.spec, result.imitation.net.eval()
    rng = np.random.default_rng(spec.train.seed)
    states, labels = result.imitation.observations, result.imitation.labels
    idx = rng.choice(len(states), size=min(len(states), 512), replace=False)
    sample = states[idx].astype(np.float32)
    graph: nn.Module = _WithFeatures(net) if isinstance(net, CameraNet) else net
    outputs = ["logits", "features"] if isinstance(net, CameraNet) else ["logits"]
    export_onnx(graph, (torch.from_numpy(sample[:2]),), staged / FP32_GRAPH, inputs=["observation"],
                outputs=outputs, dynamic={"observation": {0: "batch"}, **{o: {0: "batch"} for o in outputs}},
                what="driving policy")
    with torch.no_grad():
        want = net(torch.from_numpy(sample)).numpy()
    got = _logits(staged / FP32_GRAPH, sample)
    diff = float(np.abs(got - want).max() / max(1.0, float(np.abs(want).max())))
    if diff > spec.optimize.max_logit_diff:
        raise ExportError(f"ONNX policy differs from PyTorch by {diff:.2e} (relative logits), over "
                          f"optimize.max_logit_diff {spec.optimize.max_logit_diff:g}.")
    fp32_actions = got.argmax(1)
    int8 = None
    precision = "fp32"
    if spec.optimize.quantize:
        def agreement(path: Path) -> float:
            try:
                return float((_logits(path, sample).argmax(1) == fp32_actions).mean())
            except Exception:  # an op onnxruntime cannot run in int8 here: no int8
                return 0.0

        record = quantize_with_parity(staged / FP32_GRAPH, staged / INT8_GRAPH, agreement=agreement,
                                      min_agreement=spec.optimize.min_int8_agreement)
        best = max((t["top1_agreement"] for t in record["tries"]), default=0.0)
        int8 = Int8Parity(ok=bool(record["ok"]), top1_agreement=best, min_agreement=spec.optimize.min_int8_agreement,
                          accuracy=None, recipe=record["recipe"], details={"tries": record["tries"]})
        precision = "int8" if record["ok"] else "fp32"
    expert_agreement = float((fp32_actions == labels[idx]).mean())
    parity = Parity(len(sample), diff, diff_key="max_rel_logit_diff", int8=int8,
                    details={"fp32_action_agreement_with_expert": expert_agreement})
    return parity, precision


def driving_pipeline(spec: DrivingSpec, result: DrivingFitResult, precision: str, graphs: dict[str, str],
                     ) -> dict[str, Any]:
    """pipeline.json: graphs, observation shape/dtype, actions, radar rows and the shield's rules."""
    info = result.info
    perception = ({"perception": {"output": "features", "shape": [len(LANE_FEATURE_NAMES)],
                                  "features": list(LANE_FEATURE_NAMES)}}
                  if isinstance(result.imitation.net, CameraNet) else {})
    return {**perception, "graphs": graphs, "default_precision": precision, "input": "observation", "output": "logits",
            "observation": {"mode": spec.env.observation, "shape": list(info.observation_shape),
                            "dtype": info.observation_dtype},
            "actions": list(info.actions),
            "radar": {"shape": list(info.radar_shape), "features": list(KINEMATIC_FEATURES)},
            "shield": {"enabled": spec.shield.enabled, "rules": shield_rules(spec).to_dict()},
            "env": spec.env.model_dump(mode="json")}


def _card(spec: DrivingSpec, result: DrivingFitResult, metrics: dict[str, Any]) -> str:
    rows = "\n".join(f"| {name} | {s['collision_rate']:.3f} | {s['mean_speed']:.2f} | {s['mean_return']:.2f} | "
                     f"{s['overrides_per_episode']:.2f} |" for name, s in metrics["closed_loop"]["policies"].items())
    return f"""# {spec.name}: driving policy ({spec.env.scenario}, {spec.env.observation})

## Intended use
A meta-action policy (lane left/right, faster, slower, idle) for the highway-env `{spec.env.scenario}`
scenario, imitating a rule-based expert (behaviour cloning + {spec.train.dagger_rounds} DAgger rounds),
with a rule-based safety shield (time-to-collision and distance checks) that overrides unsafe actions.
A simulator policy for research and teaching: not for any real vehicle.

## Training
{result.imitation.env_steps} environment steps, {len(result.imitation.labels)} labelled states,
{result.train_seconds:.0f} s.

## Closed-loop evaluation ({metrics['closed_loop']['episodes']} seeded episodes)
| policy | collision rate | mean speed (m/s) | return | shield overrides / episode |
|---|---|---|---|---|
{rows}

## Limits
The shield sees only the observed vehicles (its radar rows); it cannot prevent every collision
(a car cutting in from behind, traffic slower than the slowest target speed with both neighbour
lanes blocked). Camera policies need the radar rows sent alongside for the shield to act.
"""


def write_driving_bundle(staged: Path, *, spec: DrivingSpec, result: DrivingFitResult) -> BundleParts:
    """Graphs, parity, the closed-loop evaluation, report.html + replay.gif: the bundle's parts."""
    parity, precision = _export(result, staged)
    graphs = {"fp32": FP32_GRAPH, **({"int8": INT8_GRAPH} if (staged / INT8_GRAPH).is_file() else {})}
    pipeline = driving_pipeline(spec, result, precision, graphs)
    # the staged bundle drives through the same runtime that serves it
    (staged / "pipeline.json").write_text(json.dumps(pipeline), encoding="utf-8")
    manifest = BundleManifest(format_version=1, task="driving", name=spec.name, version="0", created="",
                              files={}, extra={})
    rt = DrivingRuntime(staged, manifest, precision=precision, threads=1)
    policies = POLICIES if spec.eval.baselines else ("aiforge", "aiforge+shield")
    loop = closed_loop(rt, spec.env, episodes=spec.eval.episodes, seed=spec.eval.seed, policies=policies,
                       record=spec.eval.replay_frames)
    shielded = loop.episodes["aiforge+shield"][0]
    gif = write_gif(shielded, staged / "replay.gif")
    write_replay(shielded, staged / REPLAY_JSON, actions=rt.labels)
    write_report(loop, staged / "report.html", title=f"{spec.name}: closed-loop evaluation", gif=gif)
    chosen = loop.summaries["aiforge+shield"]
    metrics = {"closed_loop": {"episodes": spec.eval.episodes, **loop.to_dict()},
               "training": {"env_steps": result.imitation.env_steps, "states": len(result.imitation.labels),
                            "train_seconds": result.train_seconds, "history": result.imitation.history}}
    headline = {"collision_rate": chosen.collision_rate, "mean_speed": chosen.mean_speed,
                "mean_return": chosen.mean_return, "shield_override_rate": chosen.override_rate}
    extra = {"scenario": spec.env.scenario, "observation": spec.env.observation,
             "env_steps": result.imitation.env_steps}
    return BundleParts(pipeline=pipeline, metrics=metrics, card=_card(spec, result, metrics), parity=parity,
                       headline=headline, extra=extra)

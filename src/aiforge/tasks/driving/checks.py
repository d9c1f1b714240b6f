"""What ``aiforge eval``, ``audit`` and ``ship`` measure on a driving bundle: closed-loop episodes (torch-free).

``eval``/``audit`` drive the plan's seeded episodes (``--data``: a drive plan or a driving
aiforge.yaml) with each policy through the bundle's runtime and write report.html and
replay.gif. ``ship`` drives the spec's ``eval`` episodes with the shield on and checks the
collision rate, mean speed, the p99 latency of one act (graph + shield) and the override rate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from aiforge.audit.checks import Measured
from aiforge.audit.gates import Gate, Measurements, ReleaseGates
from aiforge.audit.report import CheckReport, ReportTable
from aiforge.bundle.runtime import Runtime
from aiforge.errors import BundleError
from aiforge.spec import BaseSpec
from aiforge.tasks.driving.closedloop import ClosedLoop, closed_loop
from aiforge.tasks.driving.plan import DrivePlan, read_plan
from aiforge.tasks.driving.report import write_gif, write_report
from aiforge.tasks.driving.runtime import DrivingRuntime, Observation
from aiforge.tasks.driving.spec import DrivingSpec

__all__ = ["CHECKS", "DRIVING_GATES", "DrivingChecks", "run_plan"]


def _audit(key: str) -> Callable[[Measurements, str | None], float | None]:
    def read(m: Measurements, feature: str | None) -> float | None:
        value = m.audit.get(key)
        return float(value) if isinstance(value, int | float) else None

    return read


DRIVING_GATES: tuple[Gate, ...] = (
    Gate("max_collision_rate", "collision rate over the closed-loop episodes (shield on)", "max",
         _audit("collision_rate")),
    Gate("min_mean_speed", "mean speed over the closed-loop episodes, m/s (shield on)", "min",
         _audit("mean_speed")),
    Gate("max_p99_act_latency_ms", "p99 latency of one act (policy graph + shield) in the loop, ms", "max",
         _audit("p99_act_latency_ms")),
    Gate("max_shield_override_rate", "shield overrides per step", "max",
         _audit("shield_override_rate")),
)


def _driving(rt: Runtime) -> DrivingRuntime:
    if not isinstance(rt, DrivingRuntime):
        raise BundleError(f"{rt.path}: expected a driving bundle, got {rt.manifest.task!r}.")
    return rt


def _tables(loop: ClosedLoop, title: str) -> list[ReportTable]:
    rows = [[s.policy, f"{s.collision_rate:.3f}", f"{s.mean_speed:.2f}", f"{s.mean_return:.2f}",
             f"{s.mean_distance_m:.0f}", f"{s.lane_changes_per_episode:.2f}",
             "-" if s.min_ttc_median_s is None else f"{s.min_ttc_median_s:.2f}",
             f"{s.overrides_per_episode:.2f}", f"{s.latency_p50_ms:.2f}/{s.latency_p99_ms:.2f}"]
            for s in loop.summaries.values()]
    return [ReportTable(title, ["policy", "collision rate", "mean speed", "return", "distance m", "lane changes",
                                "median min-TTC s", "overrides/ep", "latency p50/p99 ms"], rows)]


def run_plan(rt: DrivingRuntime, plan: DrivePlan, *, output: Path) -> CheckReport:
    """Drive the plan through the bundle's runtime; write report.html and replay.gif into ``output``."""
    env = plan.env_for(rt.env)
    loop = closed_loop(rt, env, episodes=plan.episodes, seed=plan.seed, policies=tuple(plan.policies),
                       record=plan.replay_frames if "aiforge+shield" in plan.policies else 0)
    output.mkdir(parents=True, exist_ok=True)
    shielded = loop.episodes.get("aiforge+shield")
    gif = write_gif(shielded[0], output / "replay.gif") if shielded else None
    title = f"{rt.name}:{rt.version}: {plan.episodes} closed-loop episodes ({env.scenario}, {env.observation})"
    report = write_report(loop, output / "report.html", title=title, gif=gif)
    files = [report, *([gif] if gif is not None else [])]
    return CheckReport(title, loop.to_dict(), _tables(loop, title), [f"report: {report}"], files)


class DrivingChecks:
    """Closed-loop evaluation and the driving gates."""

    gates = DRIVING_GATES

    def evaluate(self, rt: Runtime, data: Path, *, columns: Mapping[str, str]) -> CheckReport:
        """Drive the plan in ``data``; report.html and replay.gif go to the plan's output (default ./eval-NAME)."""
        plan = read_plan(data)
        return run_plan(_driving(rt), plan, output=plan.output or Path(f"eval-{rt.name}"))

    def audit(self, rt: Runtime, data: Path, *, sensitive: Sequence[str], output: Path) -> CheckReport:
        """The same closed-loop report, written into ``output`` (there are no sensitive groups to audit)."""
        report = run_plan(_driving(rt), read_plan(data), output=output)
        lines = report.lines + (["driving bundles have no sensitive groups; --sensitive is ignored"]
                                if sensitive else [])
        return CheckReport(report.title, report.metrics, report.tables, lines, report.files)

    def measure(self, rt: Runtime, spec: BaseSpec, gates: ReleaseGates, data: Path | None) -> Measured:
        """The shielded policy over the spec's eval episodes (or ``data``'s plan)."""
        drt = _driving(rt)
        if data is not None:
            plan = read_plan(data)
        elif isinstance(spec, DrivingSpec):
            plan = DrivePlan(episodes=spec.eval.episodes, seed=spec.eval.seed, env=spec.env.model_dump(mode="json"))
        else:
            plan = DrivePlan()
        env = plan.env_for(drt.env)
        loop = closed_loop(drt, env, episodes=plan.episodes, seed=plan.seed, policies=("aiforge+shield",))
        s = loop.summaries["aiforge+shield"]
        lat = np.array([x for e in loop.episodes["aiforge+shield"] for x in e.latency_ms])
        audit = {"collision_rate": s.collision_rate, "mean_speed": s.mean_speed,
                 "shield_override_rate": s.override_rate, "mean_return": s.mean_return,
                 "p99_act_latency_ms": float(np.percentile(lat, 99)) if lat.size else None,
                 "episodes": plan.episodes}
        probe = Observation(np.zeros(drt.shape, dtype=drt.dtype), None)
        return Measured(audit, lambda: drt.run_batch([probe]),
                        source=f"{plan.episodes} closed-loop episodes of {env.scenario} (seeds {plan.seed}+)")


CHECKS = DrivingChecks()

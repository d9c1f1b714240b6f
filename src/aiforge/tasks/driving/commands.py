"""``aiforge drive`` (closed-loop episodes of a driving bundle) and ``aiforge drive-demo`` (a short drive)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from aiforge.errors import AiforgeError
from aiforge.options import HomeOpt, out

if TYPE_CHECKING:
    from aiforge.audit.report import CheckReport

__all__ = ["register"]


def _show(report: CheckReport) -> None:
    for t in report.tables:
        table = Table(title=t.title)
        for i, col in enumerate(t.columns):
            table.add_column(col, justify="left" if i == 0 else "right")
        for row in t.rows:
            table.add_row(*row)
        out.print(table)
    for line in report.lines:
        out.print(line, highlight=False)


def drive(
    bundle: Annotated[str, typer.Argument(help="Driving bundle folder, NAME or NAME:VERSION.")],
    episodes: Annotated[int, typer.Option(help="Seeded episodes per policy.", min=1, max=10_000)] = 10,
    seed: Annotated[int, typer.Option(help="First seed.", min=0)] = 10_000,
    policy: Annotated[list[str] | None, typer.Option("--policy", help="random, expert, aiforge, aiforge+shield "
                                                     "(repeat) [default: all four].")] = None,
    scenario: Annotated[str | None, typer.Option(help="Drive another scenario than the bundle's "
                                                      "(highway, merge, intersection).")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Folder for report.html and replay.gif "
                                                                      "[default: ./eval-NAME].")] = None,
    home: HomeOpt = None,
) -> None:
    """Drive seeded episodes with the bundle (with and without its shield) and the baselines; write the report."""
    # lazy: the simulator (gymnasium, highway-env, pygame), the loader and the plan's YAML stay out of the
    # CLI's start-up (every command, `aiforge serve` included, registers this one)
    from aiforge.app import load
    from aiforge.tasks.driving.checks import run_plan
    from aiforge.tasks.driving.plan import DrivePlan
    from aiforge.tasks.driving.runtime import DrivingRuntime

    rt = load(bundle, home=home)
    if not isinstance(rt, DrivingRuntime):
        raise AiforgeError(f"{bundle} is a {rt.manifest.task} bundle; drive needs a driving bundle.")
    plan = DrivePlan(episodes=episodes, seed=seed, policies=policy or DrivePlan().policies,
                     env={"scenario": scenario} if scenario else {})
    _show(run_plan(rt, plan, output=output or Path(f"eval-{rt.name}")))


def drive_demo(
    home: HomeOpt = None,
    workdir: Annotated[Path | None, typer.Option(help="Where to write the report (default: a temp folder).")] = None,
) -> None:
    """Train a tiny highway policy (imitation of the expert, one DAgger round), then drive it with its shield."""
    # lazy: torch and the simulator stay out of the CLI's start-up
    from aiforge.app import App, load
    from aiforge.tasks.driving.checks import run_plan
    from aiforge.tasks.driving.plan import DrivePlan
    from aiforge.tasks.driving.runtime import DrivingRuntime
    from aiforge.tasks.driving.spec import DrivingSpec

    folder = workdir or Path(tempfile.mkdtemp(prefix="aiforge-drive-demo-"))
    spec = DrivingSpec.from_dict({"name": "demo-highway", "task": "driving",
                                  "env": {"scenario": "highway", "observation": "kinematics", "duration": 15},
                                  "train": {"expert_episodes": 4, "dagger_rounds": 1, "dagger_episodes": 2,
                                            "epochs": 30, "threads": 2},
                                  "eval": {"episodes": 1, "baselines": False, "replay_frames": 16}},
                                 source="drive-demo")
    out.print("[bold]1.[/] imitating the expert driver on highway (4 drives + 1 DAgger round)")
    application = App(spec, home=home)
    application.fit(progress=True)
    exported = application.export()
    out.print(f"    registered demo-highway:{exported.record.version} at {exported.path}")
    out.print("[bold]2.[/] driving 3 seeded episodes through the torch-free runtime, with and without the shield")
    rt = load("demo-highway", home=home)
    if not isinstance(rt, DrivingRuntime):
        raise AiforgeError("the demo's bundle is not a driving bundle.")
    plan = DrivePlan(episodes=3, policies=["aiforge", "aiforge+shield"], replay_frames=16)
    report = run_plan(rt, plan, output=folder)
    _show(report)
    gif = folder / "replay.gif"
    out.print(f"replay: {gif}" if gif.is_file() else "no replay written", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``drive`` and ``drive-demo`` to the CLI."""
    app.command()(drive)
    app.command("drive-demo")(drive_demo)

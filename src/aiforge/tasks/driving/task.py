"""Driving: imitate a rule-based expert in highway-env (behaviour cloning + DAgger), export with a safety shield.

``fit`` drives the expert, trains the perception + policy network on its actions and runs the
DAgger rounds; ``export`` writes the ONNX graph (int8 when it keeps the actions), the shield's
rules in ``pipeline.json``, and the closed-loop evaluation of the staged bundle (through the
torch-free runtime) in ``metrics.json``, ``report.html`` and ``replay.gif``.
"""

from __future__ import annotations

import os
from functools import partial
from typing import TYPE_CHECKING

import torch
from rich.table import Table

from aiforge.bundle.parts import ExportResult, export_bundle
from aiforge.bundle.registry import Registry
from aiforge.progress import console
from aiforge.spec import BaseSpec
from aiforge.tasks.base import check_spec, parity_line
from aiforge.tasks.driving.env import env_info
from aiforge.tasks.driving.export import write_driving_bundle
from aiforge.tasks.driving.fitted import DrivingFitResult
from aiforge.tasks.driving.spec import DrivingSpec
from aiforge.tasks.driving.training import imitate

if TYPE_CHECKING:
    from rich.console import RenderableType

__all__ = ["DrivingTask"]


class DrivingTask:
    """Fit and export a driving policy as the spec says."""

    name = "driving"

    def fit(self, spec: BaseSpec, *, progress: bool = True) -> DrivingFitResult:
        """Drive the expert, clone it, run the DAgger rounds.

        Raises:
            AiforgeError: highway-env is not installed (names the pip command).
        """
        spec = check_spec(spec, DrivingSpec)
        torch.set_num_threads(spec.train.threads or os.cpu_count() or 1)
        log = (lambda s: console.print(f"  {s}", highlight=False)) if progress else (lambda s: None)
        imitation = imitate(spec, log=log)
        return DrivingFitResult(spec, env_info(spec.env), imitation)

    def export(self, spec: BaseSpec, result: DrivingFitResult, registry: Registry) -> ExportResult:
        """ONNX (+ gated int8), shield rules, closed-loop evaluation and report; register.

        Raises:
            ExportError: export failed or the ONNX graph does not match PyTorch.
        """
        spec = check_spec(spec, DrivingSpec)
        return export_bundle(registry, spec, partial(write_driving_bundle, spec=spec, result=result))

    def summarize(self, result: DrivingFitResult, exported: ExportResult) -> list[RenderableType]:
        """The closed-loop table per policy and the parity line, for ``aiforge train``."""
        metrics = exported.manifest.extra.get("metrics", {})
        table = Table(title=f"{exported.record.name}: {result.imitation.env_steps} env steps, trained in "
                            f"{result.train_seconds:.0f} s")
        for col in ("collision rate", "mean speed", "shield override rate", "mean return"):
            table.add_column(col, justify="right")
        table.add_row(*(f"{metrics.get(k, float('nan')):.3f}" for k in
                        ("collision_rate", "mean_speed", "shield_override_rate", "mean_return")))
        return [table, parity_line(exported.parity, " (dynamic)"),
                f"report: {exported.path / 'report.html'} (replay: {exported.path / 'replay.gif'})"]

"""The Task protocol every application kind implements, and the task table."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aiforge.audit.metrics import Metrics
from aiforge.bundle.format import BundleManifest
from aiforge.bundle.registry import BundleRecord, Registry
from aiforge.errors import SpecError
from aiforge.spec import BaseSpec
from aiforge.tasks.registry import get_kind, resolve

__all__ = ["ExportResult", "Fitted", "Task", "check_spec", "get_task", "parity_line"]


@dataclass(frozen=True)
class ExportResult:
    """A registered bundle: where it is, its manifest and its parity record."""

    record: BundleRecord
    manifest: BundleManifest
    parity: dict[str, Any]

    @property
    def path(self) -> Path:
        return self.record.path


class Fitted(Protocol):
    """A trained model that can predict, evaluate and export itself."""

    labels: list[str]

    def predict(self, items: list[Any]) -> list[dict[str, Any]]: ...

    def evaluate(self, dataset: Any) -> Metrics: ...

    def export(self, directory: Path, *, parity_data: Any) -> dict[str, Any]: ...


class Task(Protocol):
    """An application kind: turns data and a spec into a fit result, then a registered bundle."""

    name: str

    def fit(self, spec: Any, *, progress: bool = True) -> Any:
        """Train and evaluate (and audit, where the task has one); return the task's result object."""
        ...

    def export(self, spec: Any, result: Any, registry: Registry) -> ExportResult:
        """Write the bundle (ONNX, pipeline.json, metrics.json, card.md) and register it."""
        ...

    def summarize(self, result: Any, exported: ExportResult) -> list[Any]:
        """Rich renderables that ``aiforge train`` prints after export."""
        ...


def get_task(name: str) -> Task:
    """An instance of the task called ``name``.

    Raises:
        SpecError: no such task.
    """
    task: Task = resolve(get_kind(name).task)()
    return task


def check_spec(spec: BaseSpec, cls: type[BaseSpec]) -> None:
    """Raise SpecError unless ``spec`` is of the spec class this task expects."""
    if not isinstance(spec, cls):
        raise SpecError(f"task {spec.task!r} needs a {cls.__name__}, got {type(spec).__name__}.")


def parity_line(parity: dict[str, Any], int8_kind: str = "") -> str:
    """One line for ``aiforge train``: fp32-vs-PyTorch difference and, if tried, int8's agreement."""
    line = f"ONNX fp32 vs PyTorch max |Δp| = {parity['fp32_vs_torch_max_abs_prob_diff']:.2e}"
    if "int8_ok" in parity:
        line += (f"; int8{int8_kind} agreement {parity['int8_top1_agreement']:.4f}, accuracy "
                 f"{parity['int8_accuracy']:.4f}{'' if parity['int8_ok'] else ' (int8 dropped: below limit)'}")
    return line

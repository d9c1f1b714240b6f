"""The Task protocol every application kind implements, and the helpers its stages share."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from aiforge.audit.metrics import Metrics
from aiforge.bundle.parts import ExportResult, Parity
from aiforge.bundle.registry import Registry
from aiforge.errors import SpecError
from aiforge.spec import BaseSpec
from aiforge.tasks.registry import get_kind, resolve

if TYPE_CHECKING:
    from rich.console import RenderableType

__all__ = ["ExportResult", "Fitted", "Task", "check_spec", "get_task", "parity_line"]

SpecT = TypeVar("SpecT", bound=BaseSpec)
SpecT_contra = TypeVar("SpecT_contra", bound=BaseSpec, contravariant=True)
ResultT = TypeVar("ResultT")


class Fitted(Protocol):
    """A trained classifier (text, image) that predicts and evaluates in PyTorch; its kind's export.py exports it."""

    labels: list[str]

    def predict(self, items: list[Any]) -> list[dict[str, Any]]: ...

    def evaluate(self, dataset: Any) -> Metrics: ...


class Task(Protocol[SpecT_contra, ResultT]):
    """An application kind: turns data and a spec into a fit result, then a registered bundle."""

    name: str

    def fit(self, spec: SpecT_contra, *, progress: bool = True) -> ResultT:
        """Train and evaluate (and audit, where the task has one); return the kind's fit result."""
        ...

    def export(self, spec: SpecT_contra, result: ResultT, registry: Registry) -> ExportResult:
        """Write the bundle (ONNX, pipeline.json, metrics.json, card.md) and register it."""
        ...

    def summarize(self, result: ResultT, exported: ExportResult) -> list[RenderableType]:
        """Rich renderables that ``aiforge train`` prints after export."""
        ...


def get_task(name: str) -> Task[BaseSpec, object]:
    """An instance of the task called ``name``.

    Its result type is known only to the kind, so callers that hold it as a ``Task[BaseSpec, object]``
    hand ``fit``'s result back to the same task object unchanged.

    Raises:
        SpecError: no such task.
    """
    task: Task[BaseSpec, object] = resolve(get_kind(name).task)()
    return task


def check_spec(spec: BaseSpec, cls: type[SpecT]) -> SpecT:
    """``spec`` as the spec class this task expects.

    Raises:
        SpecError: ``spec`` is of another kind's spec class.
    """
    if not isinstance(spec, cls):
        raise SpecError(f"task {spec.task!r} needs a {cls.__name__}, got {type(spec).__name__}.")
    return spec


def parity_line(parity: Parity, int8_kind: str = "") -> str:
    """One line for ``aiforge train``: fp32-vs-PyTorch difference and, if tried, int8's agreement."""
    line = f"ONNX fp32 vs PyTorch max |Δp| = {parity.max_abs_diff:.2e}"
    if (q := parity.int8) is not None:
        accuracy = "n/a" if q.accuracy is None else f"{q.accuracy:.4f}"
        line += (f"; int8{int8_kind} agreement {q.top1_agreement:.4f}, accuracy "
                 f"{accuracy}{'' if q.ok else ' (int8 dropped: below limit)'}")
    return line

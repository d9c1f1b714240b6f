"""The Task protocol every application kind implements, and the task table."""

from __future__ import annotations

import difflib
import importlib
from pathlib import Path
from typing import Any, Protocol

from aiforge.audit.metrics import Metrics
from aiforge.errors import SpecError
from aiforge.spec import AppSpec

__all__ = ["TASKS", "Fitted", "Task", "get_task"]


class Fitted(Protocol):
    """A trained model that can predict, evaluate and export itself."""

    labels: list[str]

    def predict(self, items: list[Any]) -> list[dict[str, Any]]: ...

    def evaluate(self, dataset: Any) -> Metrics: ...

    def export(self, directory: Path, *, parity_data: Any) -> dict[str, Any]: ...


class Task(Protocol):
    """An application kind: turns data and a spec into a Fitted model."""

    name: str

    def fit(self, spec: AppSpec, *, progress: bool = True) -> Any: ...


# task name -> "module:attribute"; imported lazily so serving never pulls in torch.
TASKS: dict[str, str] = {
    "text-classification": "aiforge.tasks.text_classification:TextClassificationTask",
}


def get_task(name: str) -> Task:
    """An instance of the task called ``name``.

    Raises:
        SpecError: no such task.
    """
    target = TASKS.get(name)
    if target is None:
        guess = difflib.get_close_matches(name, list(TASKS), n=1)
        hint = f" Did you mean {guess[0]!r}?" if guess else ""
        raise SpecError(f"unknown task {name!r}.{hint} Known tasks: {', '.join(sorted(TASKS))}.")
    module, attr = target.split(":")
    cls = getattr(importlib.import_module(module), attr)
    task: Task = cls()
    return task

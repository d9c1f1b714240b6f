"""The one table of application kinds.

Each row names, as "module:attribute" strings, where a kind keeps its spec class, its task,
its torch-free runtime, its router of extra HTTP routes, its CLI commands, its checks (what
``aiforge eval``, ``audit`` and ``ship`` measure on its bundles, see ``audit/checks.py``) and its
playground page (the try-it panel the web pages load, see ``serve/web/``) and what ``aiforge optimize``
sweeps (``optimize/hooks.py``; kinds without it are refused). Nothing else in
aiforge lists kinds: the spec loader, ``App``, ``Runtime.load``, the server and the CLI all
resolve through :func:`get_kind` and :func:`resolve`. Rows are imported lazily (on first use),
so reading the table never pulls in torch, fairlearn or a kind's other dependencies.

Adding a kind is one package under ``aiforge/tasks/`` plus one row here.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from typing import Any

from aiforge.errors import SpecError

__all__ = ["KINDS", "Kind", "get_kind", "kind_names", "resolve"]


@dataclass(frozen=True)
class Kind:
    """One application kind: its ``task:`` name and where each of its parts lives."""

    name: str
    package: str
    spec: str
    task: str
    runtime: str
    routes: str | None = None
    commands: str | None = None
    checks: str | None = None
    page: str | None = None
    optimize: str | None = None  # ``aiforge optimize``'s hooks (aiforge/optimize/hooks.py); None: refused

    def targets(self) -> dict[str, str]:
        """Every "module:attribute" of this row, by role (routes and commands only where set)."""
        roles = {"spec": self.spec, "task": self.task, "runtime": self.runtime,
                 "routes": self.routes, "commands": self.commands, "checks": self.checks, "page": self.page,
                 "optimize": self.optimize}
        return {role: target for role, target in roles.items() if target}


def _row(name: str, package: str, *, spec: str, task: str, runtime: str, routes: bool = False,
         commands: bool = False, checks: bool = True, page: bool = True, optimize: bool = False) -> Kind:
    base = f"aiforge.tasks.{package}"
    return Kind(name=name, package=base, spec=f"{base}.spec:{spec}", task=f"{base}.task:{task}",
                runtime=f"{base}.runtime:{runtime}", routes=f"{base}.routes:router" if routes else None,
                commands=f"{base}.commands:register" if commands else None,
                checks=f"{base}.checks:CHECKS" if checks else None, page=f"{base}.page:PAGE" if page else None,
                optimize=f"{base}.optimize:HOOKS" if optimize else None)


KINDS: tuple[Kind, ...] = (
    _row("text-classification", "text", spec="TextSpec", task="TextClassificationTask", runtime="TextRuntime",
         commands=True, optimize=True),
    _row("tabular-classification", "tabular", spec="TabularSpec", task="TabularTask", runtime="TabularRuntime",
         commands=True),
    _row("chat", "chat", spec="ChatSpec", task="ChatTask", runtime="ChatRuntime", routes=True, commands=True),
    _row("recommendation", "recommend", spec="RecommendSpec", task="RecommendationTask",
         runtime="RecommendRuntime", routes=True, commands=True),
    _row("image-classification", "image", spec="ImageSpec", task="ImageClassificationTask",
         runtime="ImageRuntime", routes=True, optimize=True),
    _row("driving", "driving", spec="DrivingSpec", task="DrivingTask", runtime="DrivingRuntime", routes=True,
         commands=True),
)

_BY_NAME = {k.name: k for k in KINDS}


def kind_names() -> list[str]:
    """The ``task:`` names of every kind, sorted."""
    return sorted(_BY_NAME)


def get_kind(name: object, *, where: str = "task") -> Kind:
    """The row of the kind called ``name``.

    Raises:
        SpecError: no such kind; the message suggests the closest name.
    """
    kind = _BY_NAME.get(name) if isinstance(name, str) else None
    if kind is None:
        guess = difflib.get_close_matches(str(name), list(_BY_NAME), n=1)
        hint = f" Did you mean {guess[0]!r}?" if guess else ""
        raise SpecError(f"{where}: unknown task {name!r}.{hint} Known tasks: {', '.join(kind_names())}.")
    return kind


def resolve(target: str) -> Any:
    """Import the module of a "module:attribute" string and return the attribute."""
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)

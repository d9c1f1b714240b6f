"""Application kinds; each implements the Task protocol of tasks/base.py."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiforge.tasks.base import Fitted, Task, get_task

__all__ = ["Fitted", "Task", "get_task"]


def __getattr__(name: str) -> object:
    """``tasks.base`` loads on first use: the kinds table (``tasks.registry``) must stay light to import."""
    if name in __all__:
        import importlib

        return getattr(importlib.import_module("aiforge.tasks.base"), name)
    raise AttributeError(f"module 'aiforge.tasks' has no attribute {name!r}")

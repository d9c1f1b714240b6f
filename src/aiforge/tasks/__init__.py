"""Application kinds; each implements the Task protocol of tasks/base.py."""

from aiforge.tasks.base import Fitted, Task, get_task

__all__ = ["Fitted", "Task", "get_task"]

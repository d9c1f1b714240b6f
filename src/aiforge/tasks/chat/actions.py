"""Actions: Python functions an intent may call, registered by name (never code from YAML).

A spec names an action (``action: list_sources``); the function must be registered in the
process that serves the bundle, with :func:`register_action`. Modules listed in
``$AIFORGE_CHAT_ACTIONS`` (comma-separated) are imported before a chat bundle loads, so a
server can pick up an application's own actions.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiforge.errors import BundleError

__all__ = ["ACTIONS", "ActionContext", "get_action", "import_action_modules", "register_action"]


@dataclass(frozen=True)
class ActionContext:
    """What an action sees: the user's message, the detected intent and the runtime's description."""

    message: str
    intent: str
    confidence: float
    bundle: dict[str, Any]


Action = Callable[[ActionContext], str]


ACTIONS: dict[str, Action] = {}


def register_action(name: str) -> Callable[[Action], Action]:
    """Decorator: register ``fn(ctx) -> str`` as the action ``name``."""

    def deco(fn: Action) -> Action:
        ACTIONS[name] = fn
        return fn

    return deco


def import_action_modules() -> None:
    """Import the modules named in ``$AIFORGE_CHAT_ACTIONS``.

    Raises:
        BundleError: a module cannot be imported.
    """
    for module in filter(None, (m.strip() for m in os.environ.get("AIFORGE_CHAT_ACTIONS", "").split(","))):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise BundleError(f"$AIFORGE_CHAT_ACTIONS: cannot import {module!r} ({exc}).") from exc


def get_action(name: str) -> Action:
    """The registered action ``name``.

    Raises:
        BundleError: no action of that name is registered.
    """
    try:
        return ACTIONS[name]
    except KeyError:
        raise BundleError(f"intent action {name!r} is not registered; registered: {', '.join(sorted(ACTIONS))}. "
                          "Register it with aiforge.tasks.chat.actions.register_action and list its module in "
                          "$AIFORGE_CHAT_ACTIONS.") from None


@register_action("current_time")
def _current_time(ctx: ActionContext) -> str:
    return f"It is {datetime.now(UTC).strftime('%H:%M')} UTC on {datetime.now(UTC).strftime('%A %d %B %Y')}."


@register_action("list_sources")
def _list_sources(ctx: ActionContext) -> str:
    files = ctx.bundle.get("sources", [])
    if not files:
        return "I have no documents indexed."
    return "I can answer from these documents: " + ", ".join(files) + "."

"""What a kind gives the web pages: its try-it panel script and the examples the panel offers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from aiforge.bundle.runtime import Runtime

__all__ = ["KindPage", "no_examples"]


def no_examples(runtime: Runtime) -> dict[str, Any]:
    """The default: a panel that needs nothing from the bundle beyond ``describe()``."""
    return {}


@dataclass(frozen=True)
class KindPage:
    """A kind's page: ``script`` is a file in ``package`` (its ``panel.js``); ``examples`` feeds its form."""

    package: str
    script: str = "panel.js"
    examples: Callable[[Runtime], dict[str, Any]] = field(default=no_examples)

    def script_bytes(self) -> bytes:
        """The panel's JavaScript, read from the installed package."""
        return resources.files(self.package).joinpath(self.script).read_bytes()

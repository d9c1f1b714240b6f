"""The image kind's playground page: its try-it panel (``panel.js`` beside this file) and whether it draws maps."""

from __future__ import annotations

from typing import Any

from aiforge.bundle.runtime import Runtime
from aiforge.serve.web.page import KindPage
from aiforge.tasks.image.runtime import ImageRuntime

__all__ = ["PAGE", "examples"]


def examples(runtime: Runtime) -> dict[str, Any]:
    """Whether the bundle's graph gives class-activation maps (``POST /v1/models/{name}/explain``)."""
    return {"explains": isinstance(runtime, ImageRuntime) and runtime.explains}


PAGE = KindPage("aiforge.tasks.image", examples=examples)

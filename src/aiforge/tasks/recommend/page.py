"""The recommendation kind's playground page: known users and popular items to pick from (``panel.js``)."""

from __future__ import annotations

from typing import Any

from aiforge.bundle.runtime import Runtime
from aiforge.serve.web.page import KindPage
from aiforge.tasks.recommend.runtime import RecommendRuntime

__all__ = ["PAGE", "examples"]

_SHOWN = 12


def examples(runtime: Runtime) -> dict[str, Any]:
    """The first known users and the most popular items, with their metadata, for the panel's pickers."""
    if not isinstance(runtime, RecommendRuntime):
        return {}
    popular = [int(j) for j in list(runtime.popular)[:_SHOWN]]
    items = [{"item": runtime.item_ids[j], "metadata": {k: v for k, v in runtime.metadata[j].items() if k != "item"}}
             for j in popular]
    return {"users": [str(u) for u in runtime.user_ids[:_SHOWN]], "items": items,
            "filter_fields": runtime.filter_fields}


PAGE = KindPage("aiforge.tasks.recommend", examples=examples)

"""Every kind's own routes, for checking that a model of another kind gets the one wrong-kind 400.

Each serving test calls :func:`check_wrong_kind` for the routes of the kinds it does not serve, so
the same answer (status and message) is asserted on every kind route against every kind of model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from aiforge.serve.errors import is_openai_path


@dataclass(frozen=True)
class KindRoute:
    """A route that only a model of ``needs`` (a task name) answers, with a valid body for it."""

    path: str  # "{name}" is the served model's name
    body: dict[str, Any]
    needs: str


KIND_ROUTES = [
    KindRoute("/v1/models/{name}/recommend", {"user": "u1", "k": 3}, "recommendation"),
    KindRoute("/v1/models/{name}/similar", {"item": "i1"}, "recommendation"),
    KindRoute("/v1/models/{name}/classify", {"images": ["aGVsbG8="]}, "image-classification"),
    KindRoute("/v1/chat/completions", {"model": "{name}", "messages": [{"role": "user", "content": "hi"}]}, "chat"),
    KindRoute("/v1/completions", {"model": "{name}", "prompt": "hi"}, "chat"),
    KindRoute("/v1/embeddings", {"model": "{name}", "input": "hi"}, "chat"),
    KindRoute("/v1/chat/sessions", {"model": "{name}"}, "chat"),
]


def routes_for_other_kinds(served: str) -> list[Any]:
    """``pytest.param``s of the kind routes a model of task ``served`` must be refused on."""
    return [pytest.param(r, id=r.path.rsplit("/", 1)[-1]) for r in KIND_ROUTES if r.needs != served]


def check_wrong_kind(http: httpx.Client, route: KindRoute, *, name: str, served: str) -> None:
    """POST a valid body for ``route`` naming model ``name`` (of task ``served``): a 400 with the one message."""
    path = route.path.format(name=name)
    body = {k: v.format(name=name) if v == "{name}" else v for k, v in route.body.items()}
    r = http.post(path, json=body)
    assert r.status_code == 400, (path, r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json"), r.headers
    message = f"model {name!r} is a {served} model; POST {path} needs a {route.needs} model"
    if is_openai_path(path):  # OpenAI's error shape on the OpenAI routes
        assert r.json()["error"]["message"] == message and r.json()["error"]["type"] == "invalid_request_error"
    else:
        assert r.json() == {"error": message}

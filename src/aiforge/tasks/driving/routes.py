"""Driving routes: ``POST /v1/models/{name}/act``: observations in, actions out (and whether the shield overrode).

Body: ``{"observations": [OBS, ...], "radar": [RADAR, ...]}`` (``radar`` optional: the kinematics
rows the shield checks; a kinematics observation is its own radar), or ``{"observation": OBS}``
for one. A wrong shape or dtype is a 422 naming the expected shape. The observations go through
the model's batcher with everyone else's. Torch-free.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel

from aiforge.bundle.inputs import loads_json
from aiforge.errors import InputError
from aiforge.serve.errors import ApiError
from aiforge.serve.protocols import ModelsDep, json_response, require_key, route_of
from aiforge.tasks.driving.runtime import Act, DrivingRuntime

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["driving"], dependencies=[Depends(require_key)])

_FIELDS = {"observation", "observations", "radar"}


class ActResponse(BaseModel):
    """``POST /v1/models/{name}/act`` answer, one action per observation, in order (each an :class:`Act`:
    the action taken, the policy's proposal and the shield's decision; the fields are written once, there)."""

    model: str
    version: str
    actions: list[Act]

_ACT_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "additionalProperties": False, "properties": {
        "observation": {"description": "one observation (nested arrays of the bundle's shape)"},
        "observations": {"type": "array", "description": "several observations"},
        "radar": {"description": "kinematics rows the shield checks (optional), one per observation"}}}}}}}


def _items(body: Any, rt: DrivingRuntime) -> tuple[list[Any], str]:
    expect = (f'expected {{"observations": [observation, ...], "radar": [rows, ...] (optional)}} with each '
              f"observation of shape {list(rt.shape)} ({rt.dtype.name})")
    if not isinstance(body, dict):
        raise ApiError(422, expect)
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise ApiError(422, f"unknown field(s) {unknown}; fields are {sorted(_FIELDS)}")
    if ("observation" in body) == ("observations" in body):
        raise ApiError(422, f"give exactly one of observation or observations; {expect}")
    single = "observation" in body
    observations = [body["observation"]] if single else body["observations"]
    if not isinstance(observations, list):
        raise ApiError(422, f"observations: {expect}")
    radar = body.get("radar")
    if radar is not None:
        radar = [radar] if single else radar
        if not isinstance(radar, list) or len(radar) != len(observations):
            raise ApiError(422, f"radar: expected one radar array (shape {list(rt.radar_shape)}) per observation")
        return [{"observation": o, "radar": r} for o, r in zip(observations, radar, strict=True)], \
            "observation" if single else "observations"
    return observations, "observation" if single else "observations"


@router.post("/models/{name}/act", response_model=ActResponse, openapi_extra=_ACT_BODY)
async def act(name: str, request: Request, m: ModelsDep) -> Response:
    """The action for each observation, what the policy proposed and whether the shield overrode it."""
    service = m.get(name, kind=DrivingRuntime, route=route_of(request))
    try:  # deep nesting and huge integers too: a client's mistake, never a 500
        body = loads_json(await request.body(), "request body")
    except InputError as exc:
        raise ApiError(400, str(exc)) from None
    items, field = _items(body, service.runtime)
    parsed = await asyncio.to_thread(service.parse_items, items, field)
    acts = await service.run(parsed)
    out = {"model": service.name, "version": service.runtime.version, "actions": [a.to_dict() for a in acts]}
    return json_response(out)

"""Recommendation routes: ``POST /v1/models/{name}/recommend`` and ``/similar`` (torch-free)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from aiforge.errors import InputError, UnknownItem
from aiforge.serve.errors import ApiError
from aiforge.serve.protocols import ModelsDep, json_response, require_key, route_of
from aiforge.serve.service import ModelService
from aiforge.tasks.recommend.runtime import Query, Ranking, RecommendRuntime

__all__ = ["RecommendRequest", "RecommendResponse", "SimilarRequest", "SimilarResponse", "router"]


router = APIRouter(prefix="/v1", tags=["recommendation"], dependencies=[Depends(require_key)])


class RecommendRequest(BaseModel):
    """A known user's id, or the items a new user liked (or both); optional filter on item metadata."""

    model_config = ConfigDict(extra="forbid", strict=True)
    user: str | int | None = Field(default=None, description="User id; unknown users get the cold-start path.")
    items: list[str | int] | None = Field(default=None, description="Item ids a (new) user liked.")
    k: int = Field(default=10, description="How many items to return.")
    exclude_seen: bool = Field(default=True, description="Leave out items the user already liked.")
    filter: dict[str, Any] | None = Field(default=None, description='Item metadata filter, e.g. {"genres": "Comedy"}'
                                                                     ' or {"year": {"min": 1990}}.')


class SimilarRequest(BaseModel):
    """An item id; the items most liked together with it (or closest in content)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    item: str | int
    k: int = Field(default=10)
    filter: dict[str, Any] | None = None


class Recommended(BaseModel):
    item: str | int
    score: float
    rank: int
    metadata: dict[str, Any]


class RecommendResponse(BaseModel):
    model: str
    version: str
    user: str | int | None
    cold_start: str | None = Field(description="null for a known user, else 'items' or 'popularity'.")
    recommendations: list[Recommended]


class SimilarResponse(BaseModel):
    model: str
    version: str
    item: str
    similar: list[Recommended]


async def _ranking(service: ModelService[RecommendRuntime], query: Query) -> Ranking:
    [ranked] = await service.run([query])
    return list(ranked)


@router.post("/models/{name}/recommend", response_model=RecommendResponse)
async def recommend(name: str, req: RecommendRequest, request: Request, m: ModelsDep) -> Response:
    """Top-k items for a known user, a new user's liked items, or (cold start) anyone."""
    service = m.get(name, kind=RecommendRuntime, route=route_of(request))
    rt = service.runtime
    if req.items is not None and len(req.items) > service.config.max_inputs:
        raise ApiError(422, f"items: {len(req.items)} ids, over the limit of {service.config.max_inputs}")
    try:
        query = rt.query(user=req.user, items=req.items, k=req.k, exclude_seen=req.exclude_seen, filter=req.filter)
    except InputError as exc:
        raise ApiError(422, str(exc)) from exc
    ranked = await _ranking(service, query)
    return json_response({"model": service.name, "version": rt.version, "user": req.user,
                          "cold_start": query.cold_start, "recommendations": rt.result(ranked)})


@router.post("/models/{name}/similar", response_model=SimilarResponse)
async def similar(name: str, req: SimilarRequest, request: Request, m: ModelsDep) -> Response:
    """The items most liked together with ``item`` (or closest in content)."""
    service = m.get(name, kind=RecommendRuntime, route=route_of(request))
    rt = service.runtime
    try:
        query = rt.similar_query(req.item, req.k, req.filter)
    except UnknownItem as exc:
        raise ApiError(404, str(exc)) from exc
    except InputError as exc:
        raise ApiError(422, str(exc)) from exc
    ranked = await _ranking(service, query)
    return json_response({"model": service.name, "version": rt.version, "item": str(req.item),
                          "similar": rt.result(ranked)})

"""Protocol routers: Open Inference Protocol v2 (KServe/Triton REST) and simple JSON v1.

Both take any classifier (text, tabular, image, a chat bundle's intents). A model these routes
cannot answer (recommendation, a chat bundle without intents) is refused by its runtime's
``parse_items`` with a 422 naming the routes it does answer; on v2, a tensor that is not BYTES
is a 400 first, like every malformed v2 tensor. ``ModelsDep`` is the one way every router, the
kinds' own included, reaches the served models (``m.get(name, kind=..., route=...)``).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from aiforge import __version__
from aiforge.bundle.runtime import Runtime
from aiforge.errors import InputError
from aiforge.serve.config import presented_key
from aiforge.serve.errors import ApiError
from aiforge.serve.service import Models, ModelService

__all__ = ["ErrorBody", "ModelsDep", "document_errors", "health_router", "json_response", "require_key",
           "route_of", "v1_router", "v2_router"]

# Paths that answer without a key and are never rate limited: orchestrators' probes.
PROBES = frozenset({"/v2/health/live", "/v2/health/ready"})
# The health router's paths: the only operations that need no API key.
KEYLESS = frozenset({"/v2", *PROBES})


def models(request: Request) -> Models:
    """The server's :class:`Models` table (the ``ModelsDep`` dependency)."""
    return request.app.state.models  # type: ignore[no-any-return]


def require_key(request: Request) -> None:
    """Check ``Authorization: Bearer KEY`` or ``X-API-Key`` when the server has keys.

    Raises:
        ApiError: 401 without a valid key.
    """
    keys = request.app.state.api_keys
    if keys is None:
        return
    presented = presented_key(authorization=request.headers.get("authorization"),
                              x_api_key=request.headers.get("x-api-key"))
    if not keys.check(presented):
        raise ApiError(401, "missing or invalid API key (send Authorization: Bearer KEY)",
                       headers={"WWW-Authenticate": "Bearer"})


ModelsDep = Annotated[Models, Depends(models)]


# ----- the error model, documented on every operation ---------------------------------------

class ErrorBody(BaseModel):
    """Every error the server answers: ``{"error": "what went wrong and how to fix it"}``."""

    error: str


_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}
# status: (description, with Retry-After)
_EVERY_OPERATION = {
    405: ("method not allowed on this path", False),
    408: ("request headers or body not received in time", False),
    413: ("request body over the size limit", False),
    431: ("request headers over the size limit", False),
    500: ("unexpected server error (a bug; the details are in the server log)", False),
    503: ("over the connection limit, overloaded or still loading", True),
}
_LIMITED = {429: ("over the per-client rate limit", True)}
_MODEL_OPERATION = {
    400: ("malformed request: not JSON, a malformed tensor, or a model of another kind", False),
    401: ("missing or invalid API key", False),
    404: ("unknown model, version or resource", False),
    422: ("invalid request: a field or an item breaks the schema or a limit", False),
    502: ("the generating backend failed", False),
    504: ("the answer took longer than the request timeout", False),
}


def _error_response(description: str, retry_after: bool) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
    if retry_after:
        response["headers"] = _RETRY_AFTER
    return response


def _statuses(path: str, operation: dict[str, Any]) -> dict[int, tuple[str, bool]]:
    statuses = dict(_EVERY_OPERATION)
    if path not in PROBES:
        statuses.update(_LIMITED)
    if path not in KEYLESS:
        statuses.update(_MODEL_OPERATION)
    elif "requestBody" in operation or any(p.get("in") == "path" for p in operation.get("parameters", [])):
        statuses.update({code: _MODEL_OPERATION[code] for code in (400, 404, 422)})
    return statuses


def _add_errors(schema: dict[str, Any]) -> None:
    schema.setdefault("components", {}).setdefault("schemas", {})["ErrorBody"] = ErrorBody.model_json_schema()
    for path, item in schema.get("paths", {}).items():
        for operation in item.values():
            responses = operation.setdefault("responses", {})
            default_422 = responses.get("422", {}).get("content", {}).get("application/json", {}).get("schema", {})
            if default_422.get("$ref", "").endswith("/HTTPValidationError"):
                del responses["422"]  # the server's 422 body is the error model, not FastAPI's default
            for code, (description, retry_after) in _statuses(path, operation).items():
                responses.setdefault(str(code), _error_response(description, retry_after))


def document_errors(app: FastAPI) -> None:
    """Document on every operation of ``app``'s OpenAPI schema each error status it can answer, with
    :class:`ErrorBody` (statuses an operation documents itself are kept).

    Every operation outside ``KEYLESS`` is behind :func:`require_key`: every router but the health one is.
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _add_errors(generate())  # generate() caches the schema in app.openapi_schema
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


def route_of(request: Request) -> str:
    """The route as a wrong-kind error names it: ``POST /v1/models/m/recommend``."""
    return f"{request.method} {request.url.path}"


# ----- Open Inference Protocol v2 -------------------------------------------------------

class V2Tensor(BaseModel):
    """An input tensor: texts as a BYTES tensor of shape [n] (or [n, 1])."""

    model_config = ConfigDict(extra="ignore", strict=True)
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]
    parameters: dict[str, Any] | None = None


class V2RequestedOutput(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    name: str


class V2InferRequest(BaseModel):
    """``POST /v2/models/{name}/infer`` body."""

    model_config = ConfigDict(extra="ignore", strict=True)
    id: str | None = None
    inputs: list[V2Tensor] = Field(min_length=1)
    outputs: list[V2RequestedOutput] | None = None
    parameters: dict[str, Any] | None = None


def _items_from_v2(service: ModelService[Runtime], req: V2InferRequest) -> list[Any]:
    try:
        return service.runtime.v2_inputs([t.model_dump() for t in req.inputs])
    except InputError as exc:
        raise ApiError(400, str(exc)) from exc


V2_OUTPUTS = ("label", "score", "probabilities", "out_of_scope")


def _v2_metadata(service: ModelService[Runtime]) -> dict[str, Any]:
    rt = service.runtime
    return {
        "name": rt.name, "versions": [rt.version], "platform": "onnxruntime",
        "inputs": rt.v2_metadata_inputs(),
        "outputs": [{"name": "label", "datatype": "BYTES", "shape": [-1]},
                    {"name": "score", "datatype": "FP32", "shape": [-1]},
                    {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(rt.labels)]},
                    *([{"name": "out_of_scope", "datatype": "BOOL", "shape": [-1]}]
                      if rt.out_of_scope_label is not None else [])],
        "parameters": {"task": rt.manifest.task, "precision": rt.precision, "labels": rt.labels},
    }


health_router = APIRouter(prefix="/v2", tags=["health"])
v2_router = APIRouter(prefix="/v2", tags=["Open Inference Protocol v2"], dependencies=[Depends(require_key)])


@health_router.get("")
def v2_server_metadata() -> dict[str, Any]:

    return {"name": "aiforge", "version": __version__, "extensions": []}


@health_router.get("/health/live")
def v2_live() -> dict[str, bool]:
    return {"live": True}


@health_router.get("/health/ready", responses={503: {
    "description": "not ready yet", "content": {"application/json": {"schema": {"type": "object"}}}}})
def v2_ready(m: ModelsDep) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse(m.health(), status_code=200 if m.ready else 503)


@v2_router.get("/models/{name}")
def v2_model_metadata(name: str, m: ModelsDep) -> dict[str, Any]:
    return _v2_metadata(m.get(name))


@v2_router.get("/models/{name}/versions/{version}")
def v2_model_version_metadata(name: str, version: str, m: ModelsDep) -> dict[str, Any]:
    return _v2_metadata(m.get(name, version))


@v2_router.get("/models/{name}/ready")
def v2_model_ready(name: str, m: ModelsDep) -> dict[str, Any]:
    m.get(name)  # 404 for an unknown model, 503 while loading
    return {"name": name, "ready": True}


def json_response(body: dict[str, Any]) -> Response:
    """Serialise once with the json module: the hot routes skip FastAPI's response validation."""
    return Response(json.dumps(body), media_type="application/json")


async def _v2_infer(service: ModelService[Runtime], req: V2InferRequest) -> Response:
    items = service.parse_items(_items_from_v2(service, req), "inputs[0].data")
    oos = service.runtime.out_of_scope_label
    offered = [o for o in V2_OUTPUTS if o != "out_of_scope" or oos is not None]
    wanted = [o.name for o in req.outputs] if req.outputs else offered
    unknown = [w for w in wanted if w not in offered]
    if unknown:
        raise ApiError(400, f"unknown output(s) {unknown}; outputs are {offered}")
    probs = await service.predict_proba(items)
    labels = service.runtime.labels
    best = probs.argmax(axis=1)
    n = len(items)
    outputs = {
        "label": {"name": "label", "datatype": "BYTES", "shape": [n], "data": [labels[i] for i in best]},
        "score": {"name": "score", "datatype": "FP32", "shape": [n],
                  "data": probs[np.arange(n), best].astype(float).tolist()},
        "probabilities": {"name": "probabilities", "datatype": "FP32", "shape": list(probs.shape),
                          "data": probs.astype(float).ravel().tolist()},
    }
    if oos is not None:
        outputs["out_of_scope"] = {"name": "out_of_scope", "datatype": "BOOL", "shape": [n],
                                   "data": [labels[i] == oos for i in best]}
    body: dict[str, Any] = {"model_name": service.name, "model_version": service.runtime.version,
                            "outputs": [outputs[w] for w in wanted]}
    if req.id is not None:
        body["id"] = req.id
    return json_response(body)


@v2_router.post("/models/{name}/infer")
async def v2_infer(name: str, req: V2InferRequest, m: ModelsDep) -> Response:
    return await _v2_infer(m.get(name), req)


@v2_router.post("/models/{name}/versions/{version}/infer")
async def v2_infer_version(name: str, version: str, req: V2InferRequest, m: ModelsDep) -> Response:
    return await _v2_infer(m.get(name, version), req)


# ----- simple JSON v1 --------------------------------------------------------------------

class PredictRequest(BaseModel):
    """``POST /v1/models/{name}/predict`` body."""

    model_config = ConfigDict(extra="forbid", strict=True)
    inputs: list[str | dict[str, Any]] = Field(
        min_length=1, description="Items to classify, as the model's task takes them: texts, records "
                                  "(objects of field values) or base64-encoded images.")
    top_k: int | None = Field(default=None, gt=0, description="Keep only the k most probable labels in scores.")

    @field_validator("inputs", mode="before")
    @classmethod
    def _items_are_texts_or_records(cls, value: Any) -> Any:
        """One readable message per wrong item (the union's own names each member it tried)."""
        if isinstance(value, list):
            for i, item in enumerate(value):
                if not isinstance(item, str | dict):
                    raise ValueError(f"inputs[{i}]: expected a string (a text or a base64 image) or an object (a "
                                     f"record), got {'null' if item is None else type(item).__name__}")
        return value


class PredictionOut(BaseModel):
    label: str
    score: float
    scores: dict[str, float]
    out_of_scope: bool | None = None  # only from bundles with an out-of-scope label


class PredictResponse(BaseModel):
    model: str
    version: str
    predictions: list[PredictionOut]


v1_router = APIRouter(prefix="/v1", tags=["simple JSON"], dependencies=[Depends(require_key)])


@v1_router.get("/models")
def v1_models(m: ModelsDep) -> dict[str, Any]:
    summaries = [s.summary() for s in m.services.values()]
    # "object"/"data" make the listing OpenAI-shaped too, so openai clients' models.list() works.
    data = [{"id": s.name, "object": "model", "created": _created(s), "owned_by": "aiforge"}
            for s in m.services.values()]
    return {**m.health(), "models": summaries, "object": "list", "data": data}


def _created(service: ModelService[Runtime]) -> int:
    """The bundle's creation time in Unix seconds (0 if unparseable)."""
    from datetime import datetime

    try:
        return int(datetime.fromisoformat(service.runtime.manifest.created).timestamp())
    except (ValueError, TypeError):
        return 0


@v1_router.post("/models/{name}/predict", response_model=PredictResponse)
async def v1_predict(name: str, req: PredictRequest, m: ModelsDep) -> Response:
    service = m.get(name)
    items = service.parse_items(req.inputs, "inputs")
    probs = await service.predict_proba(items)
    labels = service.runtime.labels
    k = req.top_k or len(labels)
    preds = []
    oos = service.runtime.out_of_scope_label
    for row in probs:
        order = np.argsort(-row)[:k]
        preds.append({"label": labels[int(order[0])], "score": float(row[order[0]]),
                      "scores": {labels[int(i)]: float(row[i]) for i in order}})
        if oos is not None:
            preds[-1]["out_of_scope"] = labels[int(order[0])] == oos
    return json_response({"model": service.name, "version": service.runtime.version, "predictions": preds})

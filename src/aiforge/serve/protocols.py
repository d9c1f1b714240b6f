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
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from aiforge import __version__
from aiforge.bundle.runtime import Runtime
from aiforge.errors import InputError
from aiforge.serve.config import presented_key
from aiforge.serve.errors import ApiError, is_openai_path
from aiforge.serve.service import Models, ModelService
from aiforge.serve.v2binary import HEADER, encode_outputs, parse_infer_body

__all__ = ["ErrorBody", "ModelsDep", "document_errors", "health_router", "json_response", "require_key",
           "route_of", "v1_router", "v2_router"]

# Paths that answer without a key and are never rate limited: orchestrators' probes.
PROBES = frozenset({"/v2/health/live", "/v2/health/ready"})
# The health router's paths: the only operations that need no API key.
KEYLESS = frozenset({"/v2", *PROBES})


async def models(request: Request) -> Models:
    """The server's :class:`Models` table (the ``ModelsDep`` dependency).

    Async, like :func:`require_key`: FastAPI runs a plain ``def`` dependency in its thread pool, and
    these two thread hops per request were measurable on a server pinned to one core.
    """
    return request.app.state.models  # type: ignore[no-any-return]


async def require_key(request: Request) -> None:
    """Check ``Authorization: Bearer KEY`` or ``X-API-Key`` when the server has keys (no I/O: runs on the loop).

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
    """Every error of the v2 and simple JSON routes: ``{"error": "what went wrong and how to fix it"}``."""

    error: str


class OpenAIError(BaseModel):
    message: str = Field(description="What went wrong and how to fix it.")
    type: str = Field(description="invalid_request_error, authentication_error, not_found_error, "
                                  "rate_limit_error, server_error, ...")
    param: str | None = Field(description="The request field the error is about, if any.")
    code: str | None = Field(description="A machine-readable code, e.g. unsupported_parameter.")


class OpenAIErrorBody(BaseModel):
    """Every error of the OpenAI-compatible routes, in OpenAI's shape (invalid requests are 400s)."""

    error: OpenAIError


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


def _error_response(description: str, retry_after: bool, model: str = "ErrorBody") -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{model}"}}}}
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


def add_models(schema: dict[str, Any], *models: type[BaseModel]) -> None:
    """Put ``models`` (and the models they use) in the schema's components, for routes that read their body
    themselves and refer to it with ``openapi_extra``."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in models:
        found = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in found.pop("$defs", {}).items():
            components.setdefault(name, sub)
        components.setdefault(model.__name__, found)


def _add_errors(schema: dict[str, Any]) -> None:
    add_models(schema, ErrorBody, OpenAIErrorBody, V2InferRequest)
    schemas = schema["components"]["schemas"]
    for unused in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422 body, which this server never sends
        schemas.pop(unused, None)
    for path, item in schema.get("paths", {}).items():
        openai = is_openai_path(path)
        for operation in item.values():
            responses = operation.setdefault("responses", {})
            default_422 = responses.get("422", {}).get("content", {}).get("application/json", {}).get("schema", {})
            if default_422.get("$ref", "").endswith("/HTTPValidationError"):
                del responses["422"]  # the server's 422 body is the error model, not FastAPI's default
            for code, (description, retry_after) in _statuses(path, operation).items():
                if openai and code == 422:
                    continue  # OpenAI routes answer invalid requests with 400
                if openai and code == 400:
                    description = "invalid request: malformed, a field breaks the schema or a limit, an " \
                                  "unsupported parameter, or a model of another kind"
                responses.setdefault(str(code), _error_response(description, retry_after,
                                                                "OpenAIErrorBody" if openai else "ErrorBody"))


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
    """A requested output; ``parameters.binary_data: true`` asks for it in the binary part."""

    model_config = ConfigDict(extra="ignore", strict=True)
    name: str
    parameters: dict[str, Any] | None = None


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


class V2OutputTensor(BaseModel):
    """An output tensor; in a binary answer ``data`` is absent and ``parameters.binary_data_size`` is set."""

    name: str
    datatype: str
    shape: list[int]
    data: list[Any] | None = None
    parameters: dict[str, Any] | None = None


class V2InferResponse(BaseModel):
    """``POST /v2/models/{name}/infer`` answer."""

    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[V2OutputTensor]


class V2TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] | None = None


class V2ModelMetadata(BaseModel):
    """``GET /v2/models/{name}`` answer."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[V2TensorMetadata]
    outputs: list[V2TensorMetadata]
    parameters: dict[str, Any]


class ModelReady(BaseModel):
    name: str
    ready: bool


def _v2_metadata(service: ModelService[Runtime]) -> dict[str, Any]:
    rt = service.runtime
    return {
        "name": rt.name, "versions": [rt.version], "platform": "onnxruntime",
        "inputs": rt.v2_metadata_inputs(),
        "outputs": rt.v2_metadata_outputs(),
        "parameters": {"task": rt.manifest.task, "precision": rt.precision, "labels": rt.labels},
    }


# The probes are coroutines: answered on the event loop, never behind a busy thread pool, and a server's
# first probe does not pay for starting one (anyio's thread backend, ~10 ms at start-up).
health_router = APIRouter(prefix="/v2", tags=["health"])
v2_router = APIRouter(prefix="/v2", tags=["Open Inference Protocol v2"], dependencies=[Depends(require_key)])


# The v2 extensions this server implements (Triton's names, as tritonclient reads them).
EXTENSIONS = ["binary_tensor_data", "model_version_ready", "request_compression"]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


@health_router.get("", response_model=ServerMetadata)
async def v2_server_metadata() -> dict[str, Any]:
    """Server name, version and the protocol extensions implemented."""
    return {"name": "aiforge", "version": __version__, "extensions": EXTENSIONS}


class Live(BaseModel):
    live: bool


class LoadError(BaseModel):
    source: str
    error: str


class Readiness(BaseModel):
    """``ready`` once every model is loaded; ``errors`` names each bundle that failed to load."""

    ready: bool
    errors: list[LoadError] | None = None


@health_router.get("/health/live", response_model=Live)
async def v2_live() -> dict[str, bool]:
    """Always 200 while the process serves."""
    return {"live": True}


@health_router.get("/health/ready", response_model=Readiness, responses={503: {
    "description": "not ready yet", "content": {"application/json": {"schema": {
        "$ref": "#/components/schemas/Readiness"}}}}})
async def v2_ready(m: ModelsDep) -> Any:
    """200 once every model is loaded and warmed up, else 503."""
    return JSONResponse(m.health(), status_code=200 if m.ready else 503)


@v2_router.get("/models/{name}", response_model=V2ModelMetadata, response_model_exclude_unset=True)
def v2_model_metadata(name: str, m: ModelsDep) -> dict[str, Any]:
    return _v2_metadata(m.get(name))


@v2_router.get("/models/{name}/versions/{version}", response_model=V2ModelMetadata, response_model_exclude_unset=True)
def v2_model_version_metadata(name: str, version: str, m: ModelsDep) -> dict[str, Any]:
    return _v2_metadata(m.get(name, version))


@v2_router.get("/models/{name}/ready", response_model=ModelReady)
def v2_model_ready(name: str, m: ModelsDep) -> dict[str, Any]:
    m.get(name)  # 404 for an unknown model, 503 while loading
    return {"name": name, "ready": True}


@v2_router.get("/models/{name}/versions/{version}/ready", response_model=ModelReady)
def v2_model_version_ready(name: str, version: str, m: ModelsDep) -> dict[str, Any]:
    """200 when that version is served and loaded (tritonclient's ``is_model_ready(name, version)``)."""
    m.get(name, version)  # 404 for an unknown model or version, 503 while loading
    return {"name": name, "ready": True}


def json_response(body: dict[str, Any]) -> Response:
    """Serialise once with the json module: the hot routes skip FastAPI's response validation."""
    return Response(json.dumps(body), media_type="application/json")


async def _v2_request(m: Models, name: str, version: str | None,
                      request: Request) -> tuple[ModelService[Runtime], V2InferRequest]:
    """The model and the infer request, from a JSON body or a binary-extension one
    (``Inference-Header-Content-Length``). A malformed JSON body is refused before the model is
    looked up; binary tensors need the model (which inputs are encoded images)."""
    body = await request.body()
    header = request.headers.get(HEADER)
    if header is None:
        raw = parse_infer_body(body, None, image_inputs=frozenset())
        req = _validated(raw)
        return m.get(name, version), req
    service = m.get(name, version)
    images = frozenset(str(t["name"]) for t in service.runtime.v2_metadata_inputs()
                       if (t.get("parameters") or {}).get("content_type") == "base64")
    return service, _validated(parse_infer_body(body, header, image_inputs=images))


def _validated(raw: Any) -> V2InferRequest:
    try:
        return V2InferRequest.model_validate(raw)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e.get("loc", ()))} for e in exc.errors()]) from None


def _binary_outputs(req: V2InferRequest, wanted: list[str]) -> set[str]:
    default = bool((req.parameters or {}).get("binary_data_output", False))
    asked = {o.name: bool((o.parameters or {}).get("binary_data", default)) for o in req.outputs or []}
    return {w for w in wanted if asked.get(w, default)}


async def _v2_infer(m: Models, name: str, version: str | None, request: Request) -> Response:
    service, req = await _v2_request(m, name, version, request)
    items = service.parse_items(_items_from_v2(service, req), "inputs[0].data")
    names = service.runtime.v2_output_names()
    wanted = [o.name for o in req.outputs] if req.outputs else list(names)
    unknown = [w for w in wanted if w not in names]
    if unknown:
        raise ApiError(400, f"unknown output(s) {unknown}; outputs are {list(names)}")
    outputs = service.runtime.v2_outputs(await service.run(items))
    body: dict[str, Any] = {"model_name": service.name, "model_version": service.runtime.version,
                            "outputs": [outputs[w] for w in wanted]}
    if req.id is not None:
        body["id"] = req.id
    binary = _binary_outputs(req, wanted)
    if not binary:
        return json_response(body)
    answer = encode_outputs(body, binary)
    return Response(answer.header + answer.binary, media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(answer.header))})


# The body is read by the route (JSON, or the binary extension's JSON header + tensor bytes), so its
# schema is given here; the binary form is documented as application/octet-stream.
_INFER_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/V2InferRequest"}},
    "application/octet-stream": {"schema": {
        "type": "string", "format": "binary", "description": "binary tensor data extension: a V2InferRequest JSON "
        "header of Inference-Header-Content-Length bytes, then the tensors' bytes"}}}}}
_INFER_RESPONSES: dict[int | str, dict[str, Any]] = {200: {"content": {
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}


@v2_router.post("/models/{name}/infer", response_model=V2InferResponse, openapi_extra=_INFER_BODY,
                responses=_INFER_RESPONSES)
async def v2_infer(name: str, request: Request, m: ModelsDep) -> Response:
    """Classify the items of the input tensor(s); JSON or binary tensors, gzip/deflate bodies."""
    return await _v2_infer(m, name, None, request)


@v2_router.post("/models/{name}/versions/{version}/infer", response_model=V2InferResponse,
                openapi_extra=_INFER_BODY, responses=_INFER_RESPONSES)
async def v2_infer_version(name: str, version: str, request: Request, m: ModelsDep) -> Response:
    """:func:`v2_infer` for one version."""
    return await _v2_infer(m, name, version, request)


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


class ModelObject(BaseModel):
    """An OpenAI model object (``GET /v1/models/{name}``, openai's ``models.retrieve``)."""

    id: str
    object: str = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    """``GET /v1/models``: aiforge's summary of each model, and OpenAI's ``object``/``data`` listing."""

    ready: bool
    models: list[dict[str, Any]]
    object: str
    data: list[ModelObject]
    errors: list[LoadError] | None = None


def _model_object(service: ModelService[Runtime]) -> dict[str, Any]:
    return {"id": service.name, "object": "model", "created": _created(service), "owned_by": "aiforge"}


v1_router = APIRouter(prefix="/v1", tags=["simple JSON"], dependencies=[Depends(require_key)])


@v1_router.get("/models", response_model=ModelList, response_model_exclude_unset=True)
def v1_models(m: ModelsDep) -> dict[str, Any]:
    """Every model served (and any still loading or that failed), in aiforge's and OpenAI's shapes."""
    summaries = [s.summary() for s in m.services.values()]
    # "object"/"data" make the listing OpenAI-shaped too, so openai clients' models.list() works.
    data = [_model_object(s) for s in m.services.values()]
    return {**m.health(), "models": summaries, "object": "list", "data": data}


def _created(service: ModelService[Runtime]) -> int:
    """The bundle's creation time in Unix seconds (0 if unparseable)."""
    from datetime import datetime

    try:
        return int(datetime.fromisoformat(service.runtime.manifest.created).timestamp())
    except (ValueError, TypeError):
        return 0


@v1_router.get("/models/{name}", response_model=ModelObject)
def v1_model(name: str, m: ModelsDep) -> dict[str, Any]:
    """One served model as an OpenAI model object (404 in OpenAI's error shape if it is not served)."""
    return _model_object(m.get(name))


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

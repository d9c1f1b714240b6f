"""Image routes: ``POST /v1/models/{name}/classify`` with a multipart upload or base64 JSON.

Multipart: one or more file fields (any name; ``files`` by convention), optional ``top_k``.
JSON: ``{"images": ["<base64>", ...], "top_k": 5}``. Images are decoded and checked off the
event loop, then go through the model's batcher like texts do. Torch-free.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import UploadFile

from aiforge.bundle.inputs import loads_json
from aiforge.errors import InputError
from aiforge.serve.errors import ApiError
from aiforge.serve.protocols import ModelsDep, require_key, route_of
from aiforge.serve.service import ModelService
from aiforge.tasks.image.decode import decode_base64
from aiforge.tasks.image.runtime import Explanation, ImageRuntime

__all__ = ["ClassifyRequest", "ClassifyResponse", "ExplainResponse", "router"]


router = APIRouter(prefix="/v1", tags=["images"], dependencies=[Depends(require_key)])


class ClassifyRequest(BaseModel):
    """The JSON form of ``POST /v1/models/{name}/classify`` (the route reads its body itself)."""

    model_config = ConfigDict(extra="forbid")
    images: list[str] = Field(min_length=1, description="Base64-encoded JPEG, PNG or WebP images.")
    top_k: int | None = Field(default=None, gt=0)


class ClassifyUpload(BaseModel):
    """The multipart form: image files (any field name; ``files`` by convention) and ``top_k``."""

    files: list[bytes] = Field(json_schema_extra={"items": {"type": "string", "format": "binary"}})
    top_k: int | None = None


class TopLabel(BaseModel):
    label: str
    score: float


class ImagePrediction(BaseModel):
    image: str = Field(description="The file name, or images[i].")
    label: str
    score: float
    top: list[TopLabel]


class ClassifyResponse(BaseModel):
    model: str
    version: str
    predictions: list[ImagePrediction]


class ExplainRequest(BaseModel):
    """The JSON form of ``POST /v1/models/{name}/explain``: images, and the label to explain (default: the top one)."""

    model_config = ConfigDict(extra="forbid")
    images: list[str] = Field(min_length=1, description="Base64-encoded JPEG, PNG or WebP images.")
    label: str | None = None


class ExplainUpload(BaseModel):
    """The multipart form of ``explain``: image files and an optional ``label``."""

    files: list[bytes] = Field(json_schema_extra={"items": {"type": "string", "format": "binary"}})
    label: str | None = None


class ExplainResponse(BaseModel):
    """Per image: the predicted label, the class explained, its class-activation map (grid and PNG)."""

    model: str
    version: str
    explanations: list[Explanation]


# The route reads its body itself (JSON or multipart), so the schema says what it takes.
_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": ClassifyRequest.model_json_schema()},
    "multipart/form-data": {"schema": ClassifyUpload.model_json_schema()}}}}
_EXPLAIN_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": ExplainRequest.model_json_schema()},
    "multipart/form-data": {"schema": ExplainUpload.model_json_schema()}}}}


def _top_k(raw: Any, n_labels: int, default: int) -> int:
    if raw is None or raw == "":
        return min(default, n_labels)
    try:
        k = int(raw)
    except (TypeError, ValueError):
        raise ApiError(422, f"top_k: expected a positive integer, got {raw!r}") from None
    if k < 1:
        raise ApiError(422, f"top_k: expected a positive integer, got {k}")
    return min(k, n_labels)


async def _multipart(request: Request, service: ModelService[ImageRuntime], *,
                     option: str = "top_k") -> tuple[list[bytes], list[str], Any]:
    cfg = service.config
    try:
        form = await request.form(max_files=cfg.max_inputs + 1, max_fields=16)
    except Exception as exc:  # malformed multipart bodies, too many parts
        raise ApiError(400, f"cannot read the multipart body: {getattr(exc, 'detail', exc)}") from None
    try:
        uploads = [(key, v) for key, v in form.multi_items() if isinstance(v, UploadFile)]
        if not uploads:
            raise ApiError(422, "no image file in the upload; send files as multipart fields (e.g. -F files=@cat.jpg)")
        if len(uploads) > cfg.max_inputs:
            raise ApiError(422, f"files: {len(uploads)} images, over the limit of {cfg.max_inputs} per request")
        data, names = [], []
        for i, (key, up) in enumerate(uploads):
            blob = await up.read(cfg.max_image_bytes + 1)
            if len(blob) > cfg.max_image_bytes:
                raise ApiError(422, f"files[{i}] ({up.filename or key}): image over the limit of "
                                    f"{cfg.max_image_bytes} bytes")
            data.append(blob)
            names.append(up.filename or key)
        return data, names, form.get(option)
    finally:
        await form.close()


async def _json_body(request: Request, *, option: str = "top_k") -> tuple[list[Any], list[str], Any]:
    try:  # deep nesting and 5,000-digit integers too: a client's mistake, never a 500
        body = loads_json(await request.body(), "request body")
    except InputError as exc:
        raise ApiError(400, f"{exc} (send JSON or multipart/form-data with image files)") from None
    if not isinstance(body, dict) or not isinstance(body.get("images"), list):
        raise ApiError(422, f'expected {{"images": ["<base64 JPEG/PNG/WebP>", ...], "{option}": ...}} or a '
                            "multipart upload")
    unknown = sorted(set(body) - {"images", option})
    if unknown:
        raise ApiError(422, f"unknown field(s) {unknown}; fields are images and {option}")
    images = body["images"]
    return images, [f"images[{i}]" for i in range(len(images))], body.get(option)


@router.post("/models/{name}/classify", response_model=ClassifyResponse, openapi_extra=_BODY)
async def classify(name: str, request: Request, m: ModelsDep) -> Response:
    """Classify uploaded images; one prediction (label, score, top-k) per image, in order."""
    service = m.get(name, kind=ImageRuntime, route=route_of(request))
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/"):
        items, names, top_raw = await _multipart(request, service)
        field = "files"
    else:
        items, names, top_raw = await _json_body(request)
        field = "images"
    labels = service.runtime.labels
    k = _top_k(top_raw, len(labels), service.runtime.top_k)
    parsed = await asyncio.to_thread(service.parse_items, items, field)
    probs = await service.predict_proba(parsed)
    preds = []
    for item_name, row in zip(names, probs, strict=True):
        order = np.argsort(-row)[:k]
        preds.append({"image": item_name, "label": labels[int(order[0])], "score": float(row[order[0]]),
                      "top": [{"label": labels[int(i)], "score": float(row[i])} for i in order]})
    body = {"model": service.name, "version": service.runtime.version, "predictions": preds}
    return Response(json.dumps(body), media_type="application/json")


@router.post("/models/{name}/explain", response_model=ExplainResponse, openapi_extra=_EXPLAIN_BODY)
async def explain(name: str, request: Request, m: ModelsDep) -> Response:
    """Class-activation maps (CAM) of uploaded images: where the evidence for the predicted (or given) label lies."""
    service = m.get(name, kind=ImageRuntime, route=route_of(request))
    runtime = service.runtime
    if not runtime.explains:
        raise ApiError(422, f"model {name!r} has no class-activation output (exported before maps were added); "
                            "re-export it to get maps")
    if request.headers.get("content-type", "").startswith("multipart/"):
        items, names, label = await _multipart(request, service, option="label")
    else:
        items, names, label = await _json_body(request, option="label")
    label = None if label == "" else label  # an empty form field: the predicted label
    if label is not None and not isinstance(label, str):
        raise ApiError(422, f"label: expected one of the model's labels (a string), got {label!r}")
    if label is not None and label not in runtime.labels:
        raise ApiError(422, f"label: {label!r} is not one of this model's labels")
    limits = service.config
    if not items or len(items) > limits.max_inputs:
        raise ApiError(422, f"images: expected 1 to {limits.max_inputs} images, got {len(items)}")

    def run() -> list[dict[str, Any]]:
        out = []
        for i, (item, item_name) in enumerate(zip(items, names, strict=True)):
            at = f"images[{i}]" if not isinstance(item, bytes) else f"files[{i}]"
            if isinstance(item, str):
                item = decode_base64(item, where=at, max_bytes=limits.max_image_bytes)
            elif not isinstance(item, bytes):
                raise InputError(f"{at}: expected a base64-encoded JPEG/PNG/WebP image string")
            out.append(replace(runtime.explain(item, label=label, where=at), image=item_name).to_dict())
        return out

    try:
        explanations = await asyncio.to_thread(run)
    except InputError as exc:
        raise ApiError(422, str(exc)) from None
    body = {"model": service.name, "version": runtime.version, "explanations": explanations}
    return Response(json.dumps(body), media_type="application/json")

"""HTTP errors as JSON, in the shape each protocol's clients read, for every route.

The Open Inference Protocol v2 and the simple JSON routes answer ``{"error": "..."}``; the
OpenAI-compatible routes (``/v1/chat/...``, ``/v1/completions``, ``/v1/embeddings``, ``/v1/models``
and ``/v1/models/{id}``) answer OpenAI's ``{"error": {"message", "type", "param", "code"}}`` and use
400 where the others use 422, as OpenAI clients expect.

An error message may quote what a client sent; it is rendered so that even a lone surrogate in
it gives a JSON body (``\\ud800``), never a second, unhandled error while answering the first.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from aiforge.errors import InputError

__all__ = ["OPENAI_PATH", "ApiError", "ErrorResponse", "error_body", "install_error_handlers", "is_openai_path"]


OPENAI_PATH = re.compile(r"^/v1/(chat/.*|completions|embeddings|models|models/[^/]+)$")


def is_openai_path(path: str) -> bool:
    """Whether ``path`` is an OpenAI-compatible route (its errors take OpenAI's shape)."""
    return bool(OPENAI_PATH.match(path))


_OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                 404: "not_found_error", 408: "timeout_error", 409: "conflict_error", 413: "invalid_request_error",
                 415: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error",
                 431: "invalid_request_error"}
_OPENAI_CODES = {401: "invalid_api_key", 404: "not_found", 408: "timeout", 413: "request_too_large",
                 429: "rate_limit_exceeded", 431: "request_headers_too_large", 502: "upstream_error",
                 503: "service_unavailable", 504: "timeout"}


def openai_status(status: int) -> int:
    """The status an OpenAI route answers for ``status``: 400 for every invalid request (OpenAI's use)."""
    return 400 if status == 422 else status


def error_body(path: str, status: int, message: str, *, param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """The JSON error body for ``path``: OpenAI's object on OpenAI routes, ``{"error": message}`` elsewhere."""
    if not is_openai_path(path):
        return {"error": message}
    kind = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param,
                      "code": code or _OPENAI_CODES.get(status, "invalid_request" if status < 500 else "server_error")}}


class ErrorResponse(JSONResponse):
    """An error body as JSON that any message can be written in."""

    def render(self, content: Any) -> bytes:
        # ensure_ascii escapes every non-ASCII character, lone surrogates included, as \uXXXX:
        # always encodable, and the client reads back the same text.
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


class ApiError(Exception):
    """An error with an HTTP status, a message for the client, optional headers and (for OpenAI
    routes) the request field it is about and a machine-readable code."""

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None,
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.param = param
        self.code = code


_FASTAPI_PARSE_ERROR = "There was an error parsing the body"  # FastAPI's 400 for a body json.loads refused


def _parse_error(exc: StarletteHTTPException) -> str | None:
    """What FastAPI's "error parsing the body" 400 was about, from the exception it wraps."""
    cause = exc.__cause__
    if isinstance(cause, RecursionError):
        return "request body is not valid JSON: nested too deeply"
    if isinstance(cause, UnicodeDecodeError):
        return f"request body is not UTF-8 ({cause.reason} at byte {cause.start})"
    if isinstance(cause, ValueError):  # e.g. an integer over Python's 4300-digit conversion limit
        return f"request body is not valid JSON: {cause}"
    return None


def _where(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


def answer(request: Request, status: int, message: str, *, headers: dict[str, str] | None = None,
           param: str | None = None, code: str | None = None) -> JSONResponse:
    """The error response for ``request``'s route (OpenAI routes: OpenAI's shape and status)."""
    path = request.url.path
    if is_openai_path(path):
        status = openai_status(status)
    return ErrorResponse(error_body(path, status, message, param=param, code=code), status_code=status,
                         headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Map aiforge, validation and HTTP errors to JSON; anything else is a 500 without details."""

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        return answer(request, exc.status, exc.message, headers=exc.headers, param=exc.param, code=exc.code)

    @app.exception_handler(InputError)
    async def _input(request: Request, exc: InputError) -> JSONResponse:
        return answer(request, 422, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            return answer(request, 400, "request body is not valid JSON")
        text = "; ".join(f"{_where(tuple(e.get('loc', ())))}: {e.get('msg')}" for e in errors[:5])
        param = _where(tuple(errors[0].get("loc", ()))) if errors else None
        return answer(request, 422, f"invalid request: {text}", param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = (_parse_error(exc) if exc.detail == _FASTAPI_PARSE_ERROR else None) or str(exc.detail)
        return answer(request, exc.status_code, detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        import logging

        logging.getLogger("aiforge.server").exception("unhandled error", exc_info=exc)
        return answer(request, 500, "internal server error")

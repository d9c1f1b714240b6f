"""HTTP errors as JSON ``{"error": "..."}`` (the Open Inference Protocol's form), for every route.

An error message may quote what a client sent; it is rendered so that even a lone surrogate in
it gives a JSON body (``\\ud800``), never a second, unhandled error while answering the first.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from aiforge.errors import InputError

__all__ = ["ApiError", "ErrorResponse", "install_error_handlers"]


class ErrorResponse(JSONResponse):
    """``{"error": message}`` as JSON that any message can be written in."""

    def render(self, content: Any) -> bytes:
        # ensure_ascii escapes every non-ASCII character, lone surrogates included, as \uXXXX:
        # always encodable, and the client reads back the same text.
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


class ApiError(Exception):
    """An error with an HTTP status, a message for the client and optional headers."""

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


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


def install_error_handlers(app: FastAPI) -> None:
    """Map aiforge, validation and HTTP errors to JSON; anything else is a 500 without details."""

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return ErrorResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(InputError)
    async def _input(_: Request, exc: InputError) -> JSONResponse:
        return ErrorResponse({"error": str(exc)}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            return ErrorResponse({"error": "request body is not valid JSON"}, status_code=400)
        text = "; ".join(f"{_where(tuple(e.get('loc', ())))}: {e.get('msg')}" for e in errors[:5])
        return ErrorResponse({"error": f"invalid request: {text}"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = (_parse_error(exc) if exc.detail == _FASTAPI_PARSE_ERROR else None) or str(exc.detail)
        return ErrorResponse({"error": detail}, status_code=exc.status_code,
                             headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        import logging

        logging.getLogger("aiforge.server").exception("unhandled error", exc_info=exc)
        return ErrorResponse({"error": "internal server error"}, status_code=500)

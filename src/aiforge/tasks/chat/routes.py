"""OpenAI-compatible chat routes: ``POST /v1/chat/completions`` (JSON or SSE), ``POST /v1/embeddings``,
and the session routes ``GET``/``DELETE /v1/chat/sessions/{id}``.

Extensions to the OpenAI shapes (all optional, ignored by OpenAI clients):

- request ``session_id`` (or header ``X-Session-Id``): the server keeps the history; send only the new turn.
- request ``retrieval: false``: pass the messages to the generating backend as they are (no retrieval).
- response ``citations``: ``[{id, source, heading, start, end, score, similarity, snippet}]``; ``[n]`` in
  the answer refers to ``id`` n. In a stream, they come with the last chunk (the one with ``finish_reason``).
- response ``aiforge``: ``{kind, query, intent, confidence, session_id}``.

Imports no torch: a chat runtime with the ``local`` backend loads it inside its own process when warmed up.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import iterate_in_threadpool

from aiforge.errors import GenerationError, InputError
from aiforge.serve.errors import ApiError
from aiforge.serve.protocols import ModelsDep, require_key, route_of
from aiforge.serve.service import ModelService
from aiforge.tasks.chat.redact import redact
from aiforge.tasks.chat.runtime import ChatRuntime, ChatTurn
from aiforge.tasks.chat.sessions import SessionStore

__all__ = ["router"]


log = logging.getLogger("aiforge.chat")


router = APIRouter(prefix="/v1", tags=["OpenAI-compatible chat"], dependencies=[Depends(require_key)])


SESSION_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


class ChatCompletionRequest(BaseModel):
    """The OpenAI chat request fields aiforge reads (others are accepted and ignored)."""

    model_config = ConfigDict(extra="ignore", strict=True)
    model: str
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(default=None, gt=0)
    max_completion_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    n: int = Field(default=1, ge=1, le=1, description="Only one choice is generated.")
    session_id: str | None = Field(default=None, pattern=SESSION_PATTERN)
    retrieval: bool = True


class EmbeddingRequest(BaseModel):
    """The OpenAI embeddings request."""

    model_config = ConfigDict(extra="ignore", strict=True)
    model: str
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"


class _Admission:
    """Bounds the chat answers in flight (they bypass the batcher); over the bound: 503 + Retry-After."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    def enter(self) -> None:
        if self.active >= self.limit:
            raise ApiError(503, f"{self.active} chat answers in flight, the server's limit; retry shortly",
                           headers={"Retry-After": "1"})
        self.active += 1

    def leave(self) -> None:
        self.active -= 1


def _admission(request: Request) -> _Admission:
    gate = getattr(request.app.state, "chat_admission", None)
    if gate is None:
        gate = _Admission(int(request.app.state.config.chat_max_in_flight))
        request.app.state.chat_admission = gate
    return gate


def _timeout(request: Request) -> float:
    return float(request.app.state.config.request_timeout_s)


def _log(service: ModelService[ChatRuntime], turn: ChatTurn | None, question: str, started: float, status: str) -> None:
    log.info(json.dumps({"event": "chat", "model": service.name, "session": turn.session_id if turn else None,
                         "kind": turn.kind if turn else None, "status": status,
                         "question": redact(question[:500]), "ms": round((time.perf_counter() - started) * 1000, 1)}))


def _usage(rt: ChatRuntime, messages: list[dict[str, Any]], completion_tokens: int) -> dict[str, int]:
    prompt = sum(rt.encoder.count_tokens(str(m.get("content", ""))) for m in messages)
    return {"prompt_tokens": prompt, "completion_tokens": completion_tokens, "total_tokens": prompt + completion_tokens}


@router.post("/chat/completions")
async def chat_completions(req: ChatCompletionRequest, request: Request, m: ModelsDep,
                           x_session_id: str | None = Header(default=None)) -> Response:
    service = m.get(req.model, kind=ChatRuntime, route=route_of(request))
    session = req.session_id or x_session_id
    if session is not None and not re.match(SESSION_PATTERN, session):
        raise ApiError(422, "X-Session-Id: letters, digits, '_' and '-' only, at most 64")
    gate = _admission(request)
    gate.enter()  # single-threaded event loop: no lock needed
    streaming = False
    try:
        response = await _complete(service, req, request, session, gate)
        streaming = isinstance(response, StreamingResponse)  # the stream leaves the gate when it ends
        return response
    finally:
        if not streaming:
            gate.leave()


async def _complete(service: ModelService[ChatRuntime], req: ChatCompletionRequest, request: Request,
                    session: str | None, gate: _Admission) -> Response:
    """Answer one chat request; ``gate`` is left when the answer (or its stream) ends."""
    rt = service.runtime
    max_tokens = req.max_completion_tokens or req.max_tokens
    started = time.perf_counter()
    question = str(req.messages[-1].get("content", "")) if req.messages else ""
    try:
        turn = await asyncio.wait_for(asyncio.to_thread(
            rt.respond, req.messages, session_id=session, max_tokens=max_tokens, temperature=req.temperature,
            retrieval=req.retrieval), _timeout(request))
    except InputError as exc:
        _log(service, None, question, started, "422")
        raise ApiError(422, str(exc)) from exc
    except GenerationError as exc:
        raise ApiError(422 if not req.retrieval else 502, str(exc)) from exc
    except TimeoutError as exc:
        raise ApiError(504, f"answer took longer than {_timeout(request):g} s") from exc
    cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    if req.stream:
        return StreamingResponse(_sse(service, turn, req, cid, created, question, started, _timeout(request), gate),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    try:
        await asyncio.wait_for(asyncio.to_thread(turn.collect), max(0.1, _timeout(request) - (time.perf_counter()
                                                                                             - started)))
    except GenerationError as exc:
        _log(service, turn, question, started, "502")
        raise ApiError(502, str(exc)) from exc
    except TimeoutError as exc:
        raise ApiError(504, f"answer took longer than {_timeout(request):g} s") from exc
    _log(service, turn, question, started, "200")
    finish = "length" if max_tokens and turn.completion_tokens >= max_tokens and turn.kind != "dont_know" else "stop"
    body = {
        "id": cid, "object": "chat.completion", "created": created, "model": service.name,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": turn.text}, "finish_reason": finish}],
        "usage": _usage(rt, req.messages, turn.completion_tokens),
        "citations": turn.citations, "aiforge": turn.extension(),
    }
    return Response(json.dumps(body), media_type="application/json")


def _chunk(cid: str, created: int, model: str, delta: dict[str, Any], finish: str | None = None,
           **extra: Any) -> str:
    body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
    return f"data: {json.dumps(body)}\n\n"


async def _sse(service: ModelService[ChatRuntime], turn: ChatTurn, req: ChatCompletionRequest, cid: str, created: int,
               question: str, started: float, timeout: float, gate: _Admission) -> AsyncIterator[str]:
    """Server-sent events: a role chunk, content deltas, a final chunk with citations, then ``[DONE]``."""
    pieces: Iterator[str] = turn.stream()
    yield _chunk(cid, created, service.name, {"role": "assistant", "content": ""})
    status = "200"
    try:
        async for piece in iterate_in_threadpool(pieces):
            yield _chunk(cid, created, service.name, {"content": piece})
            if time.perf_counter() - started > timeout:
                status = "504"
                yield f"data: {json.dumps({'error': {'message': f'answer took longer than {timeout:g} s'}})}\n\n"
                break
        else:
            yield _chunk(cid, created, service.name, {}, "stop", citations=turn.citations, aiforge=turn.extension(),
                         usage=_usage(service.runtime, req.messages, turn.completion_tokens))
    except GenerationError as exc:
        status = "502"
        yield f"data: {json.dumps({'error': {'message': str(exc)}})}\n\n"
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            await asyncio.to_thread(close)  # stops a local generation the client no longer reads
        _log(service, turn, question, started, status)
        gate.leave()
    yield "data: [DONE]\n\n"


@router.post("/embeddings")
async def embeddings(req: EmbeddingRequest, request: Request, m: ModelsDep) -> Response:
    service = m.get(req.model, kind=ChatRuntime, route=route_of(request))
    rt = service.runtime
    texts = [req.input] if isinstance(req.input, str) else req.input
    limits = rt.limits
    if not texts:
        raise ApiError(422, "input: at least one text is required")
    if len(texts) > limits["max_embedding_inputs"]:
        raise ApiError(422, f"input: {len(texts)} texts, over the limit of {limits['max_embedding_inputs']}")
    for i, t in enumerate(texts):
        if len(t) > limits["max_message_chars"]:
            raise ApiError(422, f"input[{i}]: {len(t)} characters, over the limit of {limits['max_message_chars']}")
    try:
        vectors = await asyncio.wait_for(asyncio.to_thread(rt.embed, texts), _timeout(request))
    except TimeoutError as exc:
        raise ApiError(504, f"embedding took longer than {_timeout(request):g} s") from exc
    data = []
    for i, v in enumerate(vectors):
        emb: Any = (base64.b64encode(v.astype("<f4").tobytes()).decode() if req.encoding_format == "base64"
                    else v.astype(float).tolist())
        data.append({"object": "embedding", "index": i, "embedding": emb})
    tokens = sum(rt.encoder.count_tokens(t) for t in texts)
    body = {"object": "list", "data": data, "model": service.name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    return Response(json.dumps(body), media_type="application/json")


@router.get("/chat/sessions/{session_id}")
def get_session(session_id: str) -> dict[str, Any]:
    store = SessionStore()
    if not store.exists(session_id):
        raise ApiError(404, f"no session {session_id!r}")
    return {"id": session_id, "messages": store.history(session_id)}


@router.delete("/chat/sessions/{session_id}")
def delete_session(session_id: str) -> dict[str, Any]:
    if not SessionStore().delete(session_id):
        raise ApiError(404, f"no session {session_id!r}")
    return {"id": session_id, "deleted": True}

"""OpenAI-compatible chat routes: ``POST /v1/chat/completions`` (JSON or SSE), ``POST /v1/embeddings``,
and the session routes ``POST /v1/chat/sessions``, ``GET``/``DELETE /v1/chat/sessions/{id}``.

Extensions to the OpenAI shapes (all optional, ignored by OpenAI clients):

- request ``session_id`` (or header ``X-Session-Id``): the server keeps the history; send only the new turn.
  The id comes from ``POST /v1/chat/sessions`` and works only with the API key that made it.
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
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import APIRouter, Depends, Header, Request, Response
from prometheus_client import Gauge
from pydantic import BaseModel, ConfigDict, Field

from aiforge.errors import GenerationError, InputError
from aiforge.serve.errors import ApiError
from aiforge.serve.protocols import ModelsDep, require_key, route_of
from aiforge.serve.service import Models, ModelService
from aiforge.tasks.chat.redact import redact
from aiforge.tasks.chat.runtime import ChatRuntime, ChatTurn
from aiforge.tasks.chat.sessions import ANONYMOUS, SessionStore, key_owner
from aiforge.tasks.chat.stream import Admission, EventStream, PiecePump, Slot

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


class SessionRequest(BaseModel):
    """``POST /v1/chat/sessions``: which chat model the session is for (the first one served if omitted)."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = None


class EmbeddingRequest(BaseModel):
    """The OpenAI embeddings request."""

    model_config = ConfigDict(extra="ignore", strict=True)
    model: str
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"


def _admission(request: Request) -> Admission:
    gate: Admission | None = getattr(request.app.state, "chat_admission", None)
    if gate is None:
        config = request.app.state.config
        gate = Admission(int(config.chat_max_in_flight), wait_s=float(config.chat_queue_wait_s))
        request.app.state.chat_admission = gate
        metrics = getattr(request.app.state, "metrics", None)
        if metrics is not None:  # the server's own registry: /metrics shows the slots in use
            Gauge("aiforge_chat_in_flight", "Chat answers being computed or streamed (503 at chat_max_in_flight)",
                  registry=metrics.registry).set_function(lambda: gate.active)
            Gauge("aiforge_chat_waiting", "Chat requests waiting for a slot (at most chat_queue_wait_s)",
                  registry=metrics.registry).set_function(lambda: gate.waiting)
    return gate


def _timeout(request: Request) -> float:
    return float(request.app.state.config.request_timeout_s)


def _owner(request: Request) -> str:
    """Whose sessions this request may touch: the digest of its API key (anonymous on a server without keys)."""
    if request.app.state.api_keys is None:
        return ANONYMOUS
    presented = request.headers.get("x-api-key")
    auth = request.headers.get("authorization", "")
    if presented is None and auth.lower().startswith("bearer "):
        presented = auth[7:].strip()
    return key_owner(presented)  # require_key has already checked it


def _stores(m: Models) -> dict[str, SessionStore]:
    """The session stores of the chat models served (usually one database), by model name."""
    return {name: s.runtime.sessions for name, s in m.services.items() if isinstance(s.runtime, ChatRuntime)}


def _no_session(session_id: str) -> ApiError:
    # The same answer for a missing session and another key's: an id's existence is not told to others.
    return ApiError(404, f"no session {session_id!r} for this API key; start one with POST /v1/chat/sessions")


@dataclass(frozen=True)
class _Turn:
    """What the chat log line of one request says (never the question's text unless the server asks)."""

    service: ModelService[ChatRuntime]
    request: Request
    question: str
    messages: int
    started: float

    def log(self, turn: ChatTurn | None, status: str) -> None:
        config = self.request.app.state.config
        if not config.access_log:
            return
        entry: dict[str, Any] = {
            "event": "chat", "model": self.service.name, "session": turn.session_id if turn else None,
            "kind": turn.kind if turn else None, "status": status, "messages": self.messages,
            "question_chars": len(self.question), "answer_chars": len(turn.text) if turn else 0,
            "ms": round((time.perf_counter() - self.started) * 1000, 1)}
        if config.chat_log_text:
            entry["question"] = redact(self.question[:500])
        log.info(json.dumps(entry))


def _usage(rt: ChatRuntime, messages: list[dict[str, Any]], completion_tokens: int) -> dict[str, int]:
    prompt = sum(rt.encoder.count_tokens(str(m.get("content", ""))) for m in messages)
    return {"prompt_tokens": prompt, "completion_tokens": completion_tokens, "total_tokens": prompt + completion_tokens}


@router.post("/chat/completions")
async def chat_completions(req: ChatCompletionRequest, request: Request, m: ModelsDep,
                           x_session_id: str | None = Header(default=None)) -> Response:
    service = m.get(req.model, kind=ChatRuntime, route=route_of(request))
    session = req.session_id or x_session_id
    if session is not None:
        if not re.match(SESSION_PATTERN, session):
            raise ApiError(422, "X-Session-Id: letters, digits, '_' and '-' only, at most 64")
        if not await asyncio.to_thread(service.runtime.sessions.owns, session, owner=_owner(request)):
            raise _no_session(session)
    slot = await _admission(request).acquire()
    handed_over = False
    try:
        response = await _complete(service, req, request, session, slot)
        handed_over = isinstance(response, EventStream)  # the stream gives the slot back when it ends
        return response
    finally:
        if not handed_over:
            slot.release()


async def _complete(service: ModelService[ChatRuntime], req: ChatCompletionRequest, request: Request,
                    session: str | None, slot: Slot) -> Response:
    """Answer one chat request; ``slot`` is released by the caller, or by the stream when it ends."""
    rt = service.runtime
    max_tokens = req.max_completion_tokens or req.max_tokens
    timeout = _timeout(request)
    started = time.perf_counter()
    question = req.messages[-1].get("content", "") if req.messages else ""
    meta = _Turn(service, request, question if isinstance(question, str) else "", len(req.messages), started)
    try:
        turn = await asyncio.wait_for(asyncio.to_thread(
            rt.respond, req.messages, session_id=session, max_tokens=max_tokens, temperature=req.temperature,
            retrieval=req.retrieval), timeout)
    except InputError as exc:
        meta.log(None, "422")
        raise ApiError(422, str(exc)) from exc
    except GenerationError as exc:
        raise ApiError(422 if not req.retrieval else 502, str(exc)) from exc
    except TimeoutError as exc:
        raise ApiError(504, f"answer took longer than {timeout:g} s") from exc
    cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    if req.stream:
        return EventStream(_sse(meta, turn, req, cid, created, timeout, slot), on_close=slot.release,
                           headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    pump = PiecePump(turn.stream())
    try:
        while await pump.next(started + timeout - time.perf_counter()) is not None:
            pass
    except GenerationError as exc:
        meta.log(turn, "502")
        raise ApiError(502, str(exc)) from exc
    except TimeoutError as exc:
        meta.log(turn, "504")
        raise ApiError(504, f"answer took longer than {timeout:g} s") from exc
    finally:
        pump.stop()  # after a timeout: the worker quits at its next piece
    meta.log(turn, "200")
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


def _error_event(message: str) -> str:
    return f"data: {json.dumps({'error': {'message': message}})}\n\n"


async def _sse(meta: _Turn, turn: ChatTurn, req: ChatCompletionRequest, cid: str, created: int, timeout: float,
               slot: Slot) -> AsyncGenerator[str, None]:
    """Server-sent events: a role chunk, content deltas, a final chunk with citations, then ``[DONE]``.

    However it ends (in full, timed out, the client gone, the server stopping), the ``finally`` stops
    the generation, gives the slot back and logs the turn; it never awaits, so a cancellation cannot
    cut it short. A turn whose ``[DONE]`` was not handed over is logged as ``cancelled``.
    """
    model = meta.service.name
    pump = PiecePump(turn.stream())
    status = "200"
    delivered = False
    try:
        yield _chunk(cid, created, model, {"role": "assistant", "content": ""})
        while True:
            try:
                piece = await pump.next(meta.started + timeout - time.perf_counter())
            except TimeoutError:
                status = "504"
                yield _error_event(f"answer took longer than {timeout:g} s")
                break
            except GenerationError as exc:
                status = "502"
                yield _error_event(str(exc))
                break
            if piece is None:
                yield _chunk(cid, created, model, {}, "stop", citations=turn.citations, aiforge=turn.extension(),
                             usage=_usage(meta.service.runtime, req.messages, turn.completion_tokens))
                break
            yield _chunk(cid, created, model, {"content": piece})
        yield "data: [DONE]\n\n"
        delivered = True  # resumed after [DONE]: the server has sent it
    finally:
        pump.stop()
        slot.release()
        meta.log(turn, status if delivered else "cancelled")


@router.post("/embeddings")
async def embeddings(req: EmbeddingRequest, request: Request, m: ModelsDep) -> Response:
    service = m.get(req.model, kind=ChatRuntime, route=route_of(request))
    rt = service.runtime
    try:
        texts = rt.check_texts([req.input] if isinstance(req.input, str) else req.input)
    except InputError as exc:
        raise ApiError(422, str(exc)) from exc
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


@router.post("/chat/sessions", status_code=201)
def create_session(request: Request, m: ModelsDep, req: SessionRequest | None = None) -> dict[str, Any]:
    """A new session bound to the caller's API key; send its ``id`` as ``session_id`` in chat requests."""
    stores = _stores(m)
    if req is not None and req.model is not None:
        m.get(req.model, kind=ChatRuntime, route=route_of(request))  # 404 or 400 naming the model
        name = req.model
    elif stores:
        name = next(iter(stores))
    elif not m.ready:
        raise ApiError(503, "models are still loading; retry shortly", headers={"Retry-After": "1"})
    else:
        raise ApiError(404, "this server serves no chat model")
    sid = stores[name].create(name, owner=_owner(request))
    return {"id": sid, "object": "chat.session", "created": int(time.time()), "model": name}


@router.get("/chat/sessions/{session_id}")
def get_session(session_id: str, request: Request, m: ModelsDep) -> dict[str, Any]:
    owner = _owner(request)
    for store in _unique(_stores(m)):
        if store.owns(session_id, owner=owner):
            return {"id": session_id, "object": "chat.session", "messages": store.history(session_id)}
    raise _no_session(session_id)


@router.delete("/chat/sessions/{session_id}")
def delete_session(session_id: str, request: Request, m: ModelsDep) -> dict[str, Any]:
    owner = _owner(request)
    if not any(store.delete(session_id, owner=owner) for store in _unique(_stores(m))):
        raise _no_session(session_id)
    return {"id": session_id, "deleted": True}


def _unique(stores: dict[str, SessionStore]) -> list[SessionStore]:
    return list({store.path.resolve(): store for store in stores.values()}.values())

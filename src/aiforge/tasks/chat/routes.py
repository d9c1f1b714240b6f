"""OpenAI-compatible chat routes: ``POST /v1/chat/completions`` (JSON or SSE), ``POST /v1/embeddings``,
and the session routes ``POST /v1/chat/sessions``, ``GET``/``DELETE /v1/chat/sessions/{id}``.

Extensions to the OpenAI shapes (all optional, ignored by OpenAI clients):

- request ``session_id`` (or header ``X-Session-Id``): the server keeps the history; send only the new turn.
  The id comes from ``POST /v1/chat/sessions`` and works only with the API key that made it.
- request ``retrieval: false``: pass the messages to the generating backend as they are (no retrieval).
- response ``citations``: ``[{id, source, heading, start, end, score, similarity, snippet}]``; ``[n]`` in
  the answer refers to ``id`` n. In a stream, they come with the last chunk (the one with ``finish_reason``).
- response ``aiforge``: ``{kind, query, intent, confidence, session_id}``.

``response_format`` (see :mod:`aiforge.tasks.chat.openai_api`): an upstream (``openai`` backend) is sent it;
any other answer asked for as ``json_object`` is written by :func:`json_answer` as
``{"answer": "...", "citations": [{"id", "source", "heading"}]}``, streamed or not.

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
from typing import Any

from fastapi import APIRouter, Depends, Header, Request, Response
from prometheus_client import Gauge

from aiforge.errors import GenerationError, InputError
from aiforge.serve.errors import ApiError
from aiforge.serve.protocols import ModelsDep, require_key, route_of
from aiforge.serve.service import Models, ModelService
from aiforge.tasks.chat.generate import BoundedStream
from aiforge.tasks.chat.openai_api import (
    SESSION_PATTERN,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    SessionDeleted,
    SessionHistory,
    SessionObject,
    SessionRequest,
    chat_messages,
    json_answer,
    json_citations,
    json_format,
    refuse_unsupported,
)
from aiforge.tasks.chat.redact import redact
from aiforge.tasks.chat.runtime import ChatRuntime, ChatTurn
from aiforge.tasks.chat.sessions import ANONYMOUS, SessionStore, key_owner
from aiforge.tasks.chat.stream import Admission, EventStream, PiecePump, Slot

__all__ = ["router"]


log = logging.getLogger("aiforge.chat")


router = APIRouter(prefix="/v1", tags=["OpenAI-compatible chat"], dependencies=[Depends(require_key)])


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


_PARAM = re.compile(r"^([A-Za-z_][\w.\[\]]*):")


def _input_error(exc: InputError) -> ApiError:
    """A runtime's refusal as a 400 on these routes, with the field it names as OpenAI's ``param``."""
    found = _PARAM.match(str(exc))
    return ApiError(422, str(exc), param=found.group(1) if found else None)


@router.post("/chat/completions", response_model=ChatCompletionResponse,
             responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}})
async def chat_completions(req: ChatCompletionRequest, request: Request, m: ModelsDep,
                           x_session_id: str | None = Header(default=None)) -> Response:
    """An answer to the last user message, with citations; ``stream: true`` sends it as server-sent events."""
    service = m.get(req.model, kind=ChatRuntime, route=route_of(request))
    refuse_unsupported(req, backend=str(service.runtime.generation.get("backend", "extractive")))
    session = req.session_id or x_session_id
    if session is not None:
        if not re.match(SESSION_PATTERN, session):
            raise ApiError(422, "X-Session-Id: letters, digits, '_' and '-' only, at most 64")
        if not await asyncio.to_thread(service.runtime.sessions.owns, session, owner=_owner(request)):
            raise _no_session(session)
    return await _admitted(service, req, request, session, chat=True)


@router.post("/completions", response_model=CompletionResponse,
             responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}})
async def completions(req: CompletionRequest, request: Request, m: ModelsDep) -> Response:
    """The legacy completion API: the prompt is answered like a chat request with that one user message."""
    service = m.get(req.model, kind=ChatRuntime, route=route_of(request))
    refuse_unsupported(req, backend=str(service.runtime.generation.get("backend", "extractive")))
    return await _admitted(service, req, request, None, chat=False)


async def _admitted(service: ModelService[ChatRuntime], req: ChatCompletionRequest | CompletionRequest,
                    request: Request, session: str | None, *, chat: bool) -> Response:
    slot = await _admission(request).acquire()
    handed_over = False
    try:
        response = await _complete(service, req, request, session, slot, chat=chat)
        handed_over = isinstance(response, EventStream)  # the stream gives the slot back when it ends
        return response
    finally:
        if not handed_over:
            slot.release()


def _messages(req: ChatCompletionRequest | CompletionRequest) -> list[dict[str, Any]]:
    if isinstance(req, ChatCompletionRequest):
        return chat_messages(req.messages)
    prompt = req.prompt if isinstance(req.prompt, str) else req.prompt[0]
    return [{"role": "user", "content": prompt}]


@dataclass(frozen=True)
class _Shape:
    """How an answer is written: as a chat completion or as a legacy text completion."""

    chat: bool
    cid: str
    created: int
    model: str

    def body(self, text: str, finish: str, usage: dict[str, int], turn: ChatTurn) -> dict[str, Any]:
        if self.chat:
            return {"id": self.cid, "object": "chat.completion", "created": self.created, "model": self.model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "finish_reason": finish, "logprobs": None}],
                    "usage": usage, "citations": turn.citations, "aiforge": turn.extension()}
        return {"id": self.cid, "object": "text_completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}], "usage": usage}

    def chunk(self, piece: str | None, finish: str | None = None, *, first: bool = False, **extra: Any) -> str:
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if first else \
                ({} if piece is None else {"content": piece})
            choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            kind = "chat.completion.chunk"
        else:
            choice = {"index": 0, "text": piece or "", "finish_reason": finish, "logprobs": None}
            kind = "text_completion"
        body = {"id": self.cid, "object": kind, "created": self.created, "model": self.model,
                "choices": [choice], **extra}
        return f"data: {json.dumps(body)}\n\n"

    def usage_chunk(self, usage: dict[str, int]) -> str:
        """OpenAI's ``stream_options.include_usage`` chunk: no choices, the usage."""
        kind = "chat.completion.chunk" if self.chat else "text_completion"
        body = {"id": self.cid, "object": kind, "created": self.created, "model": self.model, "choices": [],
                "usage": usage}
        return f"data: {json.dumps(body)}\n\n"


async def _complete(service: ModelService[ChatRuntime], req: ChatCompletionRequest | CompletionRequest,
                    request: Request, session: str | None, slot: Slot, *, chat: bool) -> Response:
    """Answer one request; ``slot`` is released by the caller, or by the stream when it ends."""
    rt = service.runtime
    max_tokens = (req.max_completion_tokens if isinstance(req, ChatCompletionRequest) else None) or req.max_tokens
    retrieval = req.retrieval if isinstance(req, ChatCompletionRequest) else True
    messages = _messages(req)
    timeout = _timeout(request)
    started = time.perf_counter()
    question = messages[-1].get("content", "") if messages and isinstance(messages[-1], dict) else ""
    meta = _Turn(service, request, question if isinstance(question, str) else "", len(messages), started)
    fmt = json_format(req)
    upstream = rt.generation.get("backend") == "openai"
    passed = req.response_format if isinstance(req, ChatCompletionRequest) and fmt is not None and upstream else None
    try:
        turn = await asyncio.wait_for(asyncio.to_thread(
            rt.respond, messages, session_id=session, max_tokens=max_tokens, temperature=req.temperature,
            retrieval=retrieval, response_format=passed), timeout)
    except InputError as exc:
        meta.log(None, "422")
        raise _input_error(exc) from exc
    except GenerationError as exc:
        raise ApiError(422 if not retrieval else 502, str(exc)) from exc
    except TimeoutError as exc:
        raise ApiError(504, f"answer took longer than {timeout:g} s") from exc
    # what the upstream did not write (or no upstream at all) the server writes as JSON when asked
    wrap = json_citations(turn.citations) if fmt is not None and not (
        passed is not None and turn.kind in ("retrieval", "direct")) else None
    if wrap is not None and fmt == "json_schema":
        close = getattr(turn.pieces, "close", None)
        if close is not None:
            close()
        meta.log(None, "400")
        raise ApiError(400, f"response_format: this message was answered by the bundle's {turn.kind} rule, not by "
                            "the upstream model, so the answer cannot follow a JSON schema; send "
                            "{'type': 'json_object'}, or retrieval: false to have the upstream answer it",
                       param="response_format", code="unsupported_parameter")
    # max_tokens and stop hold for every turn, templated answers included, whatever the backend did
    bounded = BoundedStream(turn.pieces, max_tokens=max_tokens, stop=req.stop_sequences())
    turn.pieces = bounded
    prefix = "chatcmpl" if chat else "cmpl"
    shape = _Shape(chat, f"{prefix}-{uuid.uuid4().hex[:24]}", int(time.time()), service.name)
    if req.stream:
        include_usage = bool((req.stream_options or {}).get("include_usage"))
        return EventStream(_sse(meta, turn, bounded, messages, shape, timeout, slot, include_usage, wrap),
                           on_close=slot.release, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
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
    text = turn.text if wrap is None else json.dumps({"answer": turn.text, "citations": wrap})
    body = shape.body(text, bounded.finish_reason, _usage(rt, messages, bounded.taken), turn)
    return Response(json.dumps(body), media_type="application/json")


def _error_event(message: str, status: int) -> str:
    kind = "timeout_error" if status == 504 else "server_error"
    return f"data: {json.dumps({'error': {'message': message, 'type': kind, 'param': None, 'code': str(status)}})}\n\n"


async def _sse(meta: _Turn, turn: ChatTurn, bounded: BoundedStream, messages: list[dict[str, Any]], shape: _Shape,
               timeout: float, slot: Slot, include_usage: bool,
               wrap: list[dict[str, Any]] | None) -> AsyncGenerator[str, None]:
    """Server-sent events: a role chunk (chat), content deltas, a final chunk with the finish reason (and, for
    chat, citations), the usage chunk when asked, then ``[DONE]``.

    However it ends (in full, timed out, the client gone, the server stopping), the ``finally`` stops
    the generation, gives the slot back and logs the turn; it never awaits, so a cancellation cannot
    cut it short. A turn whose ``[DONE]`` was not handed over is logged as ``cancelled``. With ``wrap`` (the
    citations of a ``json_object`` answer the server writes), the deltas are pieces of that JSON object.
    """
    pump = PiecePump(turn.stream() if wrap is None else json_answer(turn.stream(), wrap))
    status = "200"
    delivered = False
    try:
        if shape.chat:
            yield shape.chunk(None, first=True)
        while True:
            try:
                piece = await pump.next(meta.started + timeout - time.perf_counter())
            except TimeoutError:
                status = "504"
                yield _error_event(f"answer took longer than {timeout:g} s", 504)
                break
            except GenerationError as exc:
                status = "502"
                yield _error_event(str(exc), 502)
                break
            if piece is None:
                usage = _usage(meta.service.runtime, messages, bounded.taken)
                extra: dict[str, Any] = {"citations": turn.citations, "aiforge": turn.extension()} if shape.chat else {}
                yield shape.chunk(None, bounded.finish_reason, usage=usage, **extra)
                if include_usage:
                    yield shape.usage_chunk(usage)
                break
            yield shape.chunk(piece)
        yield "data: [DONE]\n\n"
        delivered = True  # resumed after [DONE]: the server has sent it
    finally:
        pump.stop()
        slot.release()
        meta.log(turn, status if delivered else "cancelled")


def _embedding_texts(rt: ChatRuntime, given: str | list[str] | list[int] | list[list[int]]) -> list[str]:
    """Texts to embed; token-id arrays (LangChain's default) decoded with the bundle's tokenizer."""
    if isinstance(given, str):
        return [given]
    items: list[Any] = [given] if given and all(isinstance(t, int) for t in given) else list(given)  # one array
    texts: list[str] = []
    vocab = rt.encoder.tokenizer.get_vocab_size()
    for i, item in enumerate(items):
        if isinstance(item, str):
            texts.append(item)
            continue
        assert isinstance(item, list)
        bad = next((t for t in item if not 0 <= t < vocab), None)
        if bad is not None:
            raise ApiError(400, f"input[{i}]: token id {bad} is outside this model's vocabulary (0..{vocab - 1}); "
                                "token ids must come from the model's own tokenizer", param="input")
        texts.append(rt.encoder.tokenizer.decode(item, skip_special_tokens=True))
    return texts


@router.post("/embeddings", response_model=EmbeddingResponse)
async def embeddings(req: EmbeddingRequest, request: Request, m: ModelsDep) -> Response:
    """Embeddings of texts or token-id arrays with the chat bundle's encoder (unit-length vectors)."""
    service = m.get(req.model, kind=ChatRuntime, route=route_of(request))
    refuse_unsupported(req, backend="embedding")
    rt = service.runtime
    if req.dimensions is not None and req.dimensions != rt.encoder.dim:
        raise ApiError(400, f"dimensions: this model's embeddings have {rt.encoder.dim} dimensions and cannot be "
                            f"shortened; omit dimensions or send {rt.encoder.dim}", param="dimensions",
                       code="unsupported_parameter")
    try:
        texts = rt.check_texts(_embedding_texts(rt, req.input))
    except InputError as exc:
        raise _input_error(exc) from exc
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


@router.post("/chat/sessions", status_code=201, response_model=SessionObject)
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


@router.get("/chat/sessions/{session_id}", response_model=SessionHistory)
def get_session(session_id: str, request: Request, m: ModelsDep) -> dict[str, Any]:
    owner = _owner(request)
    for store in _unique(_stores(m)):
        if store.owns(session_id, owner=owner):
            return {"id": session_id, "object": "chat.session", "messages": store.history(session_id)}
    raise _no_session(session_id)


@router.delete("/chat/sessions/{session_id}", response_model=SessionDeleted)
def delete_session(session_id: str, request: Request, m: ModelsDep) -> dict[str, Any]:
    owner = _owner(request)
    if not any(store.delete(session_id, owner=owner) for store in _unique(_stores(m))):
        raise _no_session(session_id)
    return {"id": session_id, "deleted": True}


def _unique(stores: dict[str, SessionStore]) -> list[SessionStore]:
    return list({store.path.resolve(): store for store in stores.values()}.values())

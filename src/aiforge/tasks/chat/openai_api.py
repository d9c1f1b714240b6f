"""The OpenAI request and response models of the chat routes, and what of OpenAI's API they refuse.

Every OpenAI parameter is either honoured or refused with a 400 naming it (OpenAI's error shape):
none is accepted and silently ignored. Honoured: ``model``, ``messages`` (roles system, developer,
user, assistant, tool), ``stream``, ``stream_options.include_usage``, ``max_tokens`` /
``max_completion_tokens``, ``stop``, ``temperature``, ``n=1``, ``user`` (a tag; never stored or
logged), ``response_format`` (below), and no-op values of the sampling knobs (``top_p: 1``,
penalties 0, ``logprobs: false``, ``tool_choice: none``). Refused: tools, log probabilities, seeds,
logit biases, other sampling values and any field OpenAI's API does not have.

``response_format``: ``text`` always. With the ``openai`` backend, ``json_object`` and ``json_schema``
are passed to the upstream, which constrains its answer. With the extractive and local backends
(and for answers no upstream wrote: intents, actions, "I don't know"), ``json_object`` is honoured by
the server itself: the answer is the JSON object ``{"answer": "...", "citations": [{"id", "source",
"heading"}]}``, which always parses (``max_tokens`` and ``stop`` cut the answer inside it); a
``json_schema`` is refused (400 naming ``response_format``): those backends cannot follow an arbitrary schema.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from aiforge.serve.errors import ApiError

__all__ = ["JSON_FORMATS", "ChatCompletionRequest", "ChatCompletionResponse", "CompletionRequest", "CompletionResponse",
           "EmbeddingRequest", "EmbeddingResponse", "SessionDeleted", "SessionHistory", "SessionObject",
           "SessionRequest", "chat_messages", "json_answer", "json_citations", "json_format",
           "refuse_unsupported"]

SESSION_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
JSON_FORMATS = ("json_object", "json_schema")  # response_format types other than text

StopField = str | list[str] | None


class _OpenAIRequest(BaseModel):
    """Fields OpenAI's API has but aiforge cannot honour are declared (so a client's default value,
    like ``top_p: 1``, passes) and refused by :func:`refuse_unsupported` when set to anything else."""

    model_config = ConfigDict(extra="allow", strict=True)
    model: str
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    stop: StopField = Field(default=None, description="Up to 4 sequences; the answer ends before the first.")
    n: int = Field(default=1, ge=1, le=1, description="Only one choice is generated.")
    user: str | None = Field(default=None, description="A tag for the caller; never stored or logged.")
    top_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    seed: int | None = None
    logprobs: bool | int | None = None

    @model_validator(mode="after")
    def _stop_is_at_most_four(self) -> _OpenAIRequest:
        stops = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        if len(stops) > 4:
            raise ValueError("stop: at most 4 sequences")
        return self

    def stop_sequences(self) -> tuple[str, ...]:
        return tuple(s for s in ([self.stop] if isinstance(self.stop, str) else (self.stop or [])) if s)


class ChatCompletionRequest(_OpenAIRequest):
    """``POST /v1/chat/completions``: OpenAI's chat request (see the module docstring for what is honoured)."""

    messages: list[dict[str, Any]] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, gt=0)
    session_id: str | None = Field(default=None, pattern=SESSION_PATTERN,
                                   description="aiforge extension: the server keeps the history of this session.")
    retrieval: bool = Field(default=True, description="aiforge extension: false passes the messages to the "
                                                      "generating backend as they are.")
    response_format: dict[str, Any] | None = Field(
        default=None, description="{'type': 'text'}, {'type': 'json_object'} or {'type': 'json_schema', "
                                  "'json_schema': {'name', 'schema', 'strict'}} (see the module docstring).")
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    top_logprobs: int | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = None
    service_tier: str | None = None


class CompletionRequest(_OpenAIRequest):
    """``POST /v1/completions``: the legacy completion request (LlamaIndex ``OpenAILike``'s default).

    The prompt is answered as one user message, like a chat request with that message.
    """

    prompt: str | list[str] = Field(description="One prompt (a list of one string is accepted).")
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None


class SessionRequest(BaseModel):
    """``POST /v1/chat/sessions``: which chat model the session is for (the first one served if omitted)."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = None


class EmbeddingRequest(BaseModel):
    """``POST /v1/embeddings``: texts, or token-id arrays (decoded with the bundle's tokenizer)."""

    model_config = ConfigDict(extra="allow", strict=True)
    model: str
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, gt=0, description="Must equal the model's dimension.")
    user: str | None = Field(default=None, description="A tag for the caller; never stored or logged.")


def _unknown(req: BaseModel) -> ApiError | None:
    extra = sorted((req.model_extra or {}).keys())
    if extra:
        return ApiError(400, f"unsupported parameter(s) {extra}: this server does not implement them; remove "
                             "them from the request", param=extra[0], code="unsupported_parameter")
    return None


def _refuse(param: str, message: str) -> ApiError:
    return ApiError(400, f"{param}: {message}", param=param, code="unsupported_parameter")


def refuse_unsupported(req: _OpenAIRequest | EmbeddingRequest, *, backend: str) -> None:
    """Raise a 400 naming the first parameter set to something this server cannot honour.

    Raises:
        ApiError: 400 with ``param`` and ``code: unsupported_parameter``.
    """
    error = _unknown(req)
    if error is not None:
        raise error
    if isinstance(req, EmbeddingRequest):
        return
    if req.stream_options is not None and not req.stream:
        raise _refuse("stream_options", "only allowed with stream: true")
    if req.stream_options and set(req.stream_options) - {"include_usage"}:
        raise _refuse("stream_options", "only include_usage is supported")
    defaults: dict[str, Any] = {"top_p": (None, 1, 1.0), "presence_penalty": (None, 0, 0.0),
                                "frequency_penalty": (None, 0, 0.0), "seed": (None,), "logprobs": (None, False, 0)}
    for name, allowed in defaults.items():
        if getattr(req, name) not in allowed:
            raise _refuse(name, f"{getattr(req, name)!r} is not supported (the {backend} backend cannot honour "
                                f"it); omit it")
    if req.logit_bias:
        raise _refuse("logit_bias", "not supported; omit it")
    if isinstance(req, CompletionRequest):
        if req.echo or req.suffix is not None or req.best_of not in (None, 1):
            name = "echo" if req.echo else "suffix" if req.suffix is not None else "best_of"
            raise _refuse(name, "not supported; omit it")
        if isinstance(req.prompt, list) and len(req.prompt) != 1:
            raise _refuse("prompt", f"one prompt per request, got {len(req.prompt)}")
        return
    assert isinstance(req, ChatCompletionRequest)
    if req.tools:
        raise _refuse("tools", "function calling is not supported by this server's chat models; send no tools")
    if req.tool_choice not in (None, "none", "auto"):
        raise _refuse("tool_choice", "no tools can be called; omit it or send 'none'")
    if req.top_logprobs is not None:
        raise _refuse("top_logprobs", "log probabilities are not supported; omit it")
    if req.store:
        raise _refuse("store", "completions are not stored; omit it or send false")
    if req.metadata:
        raise _refuse("metadata", "completions are not stored, so metadata has no use; omit it")
    if req.service_tier not in (None, "auto", "default"):
        raise _refuse("service_tier", "only 'auto' or 'default'")
    _check_response_format(req.response_format, backend=backend)


def _check_response_format(given: dict[str, Any] | None, *, backend: str) -> None:
    kind = (given or {}).get("type", "text")
    if kind not in ("text", *JSON_FORMATS):
        raise _refuse("response_format", f"type {kind!r} is not one of 'text', 'json_object', 'json_schema'")
    if kind == "json_schema":
        schema = (given or {}).get("json_schema")
        if not isinstance(schema, dict) or not isinstance(schema.get("name"), str):
            raise _refuse("response_format", "json_schema needs {'json_schema': {'name': ..., 'schema': {...}}}")
        if backend != "openai":
            raise _refuse("response_format", f"'json_schema' is not supported by the {backend} backend, which "
                                             "cannot follow an arbitrary schema; send {'type': 'json_object'} (the "
                                             "answer as {\"answer\", \"citations\"}) or {'type': 'text'}")


def json_format(req: ChatCompletionRequest | CompletionRequest) -> str | None:
    """The JSON ``response_format`` type a chat request asks for, or None for text."""
    if not isinstance(req, ChatCompletionRequest):
        return None
    kind = (req.response_format or {}).get("type", "text")
    return kind if kind in JSON_FORMATS else None


def json_citations(citations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The citations a ``json_object`` answer carries: the number ``[n]`` in the answer, the file, the heading."""
    return [{"id": c["id"], "source": c["source"], "heading": c["heading"]} for c in citations]


def json_answer(pieces: Iterator[str], citations: list[dict[str, Any]]) -> Iterator[str]:
    """An answer's pieces as pieces of the JSON object ``{"answer": ..., "citations": ...}``: joined, they are
    exactly ``json.dumps({"answer": "".join(pieces), "citations": citations})``, so the text always parses."""
    try:
        yield '{"answer": "'
        for piece in pieces:
            yield json.dumps(piece)[1:-1]
        yield '", "citations": ' + json.dumps(citations) + "}"
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()


_ROLE_AS = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "system"}


def chat_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI messages in the roles a chat bundle reads: ``developer`` instructions are ``system`` ones,
    a ``tool`` result is passed as ``system`` context, and an assistant turn without content (a tool call)
    has empty content. Other roles are left for the runtime to refuse with a message naming them."""
    out = []
    for m in messages:
        if not isinstance(m, dict):
            out.append(m)
            continue
        role = m.get("role")
        content = m.get("content")
        if role == "assistant" and content is None:
            content = ""
        if role == "tool" and isinstance(content, str):
            content = f"Tool result: {content}"
        out.append({"role": _ROLE_AS.get(role, role) if isinstance(role, str) else role, "content": content})
    return out


# ----- responses (documented in the OpenAPI schema; the routes write them with json.dumps) -----

class ChatMessage(BaseModel):
    role: Literal["assistant"]
    content: str


class ChatChoice(BaseModel):
    index: int
    message: ChatMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Citation(BaseModel):
    id: int
    source: str
    heading: str
    start: int
    end: int
    score: float
    similarity: float
    snippet: str


class TurnInfo(BaseModel):
    kind: str
    query: str
    intent: str | None
    confidence: float | None
    session_id: str | None


class ChatCompletionResponse(BaseModel):
    """A chat answer (``stream: false``); with ``stream: true`` the same fields come as SSE chunks."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    citations: list[Citation]
    aiforge: TurnInfo


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class EmbeddingObject(BaseModel):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"]
    data: list[EmbeddingObject]
    model: str
    usage: EmbeddingUsage


class SessionObject(BaseModel):
    id: str
    object: Literal["chat.session"]
    created: int
    model: str


class SessionMessage(BaseModel):
    role: str
    content: str


class SessionHistory(BaseModel):
    id: str
    object: Literal["chat.session"]
    messages: list[SessionMessage]


class SessionDeleted(BaseModel):
    id: str
    deleted: bool

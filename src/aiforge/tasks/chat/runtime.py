"""ChatRuntime: a chat bundle loaded without PyTorch (the ``local`` backend runs its ONNX SmolLM2 too).

One turn: check the messages against the limits; detect an intent (answer with its
template or action when confident); otherwise rewrite a follow-up with the previous
question, retrieve (hybrid BM25 + dense), say "I don't know" below the similarity
threshold, or hand the passages to the generation backend. Every answer lists the chunks
it used as citations.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aiforge.bundle.format import BundleManifest
from aiforge.bundle.inputs import check_text
from aiforge.bundle.runtime import ItemLimits, Runtime
from aiforge.errors import BundleError, GenerationError, InputError
from aiforge.hub.onnx_encoder import OnnxEncoder
from aiforge.hub.reranker import CrossEncoder
from aiforge.tasks.chat.actions import ActionContext, get_action, import_action_modules
from aiforge.tasks.chat.focused import Evidence, FocusedAnswer
from aiforge.tasks.chat.generate import (
    ExtractiveGenerator,
    GenerationRequest,
    Generator,
    Passage,
    make_generator,
)
from aiforge.tasks.chat.index import Hit, KnowledgeIndex
from aiforge.tasks.chat.intents import IntentModel
from aiforge.tasks.chat.local_llm import OnnxLocalGenerator
from aiforge.tasks.chat.rerank import rerank_hits
from aiforge.tasks.chat.sanitize import plain_text, safe_stream
from aiforge.tasks.chat.sessions import SessionStore

__all__ = ["DONT_KNOW", "ChatRuntime", "ChatTurn", "rewrite_followup"]


DONT_KNOW = "I don't know: nothing in the documents I have answers that question."


ROLES = ("system", "user", "assistant")


_FOLLOWUP = re.compile(r"\b(it|this|that|these|those|they|them|the same)\b"
                       r"|^\s*(and|or|but|also|what about|how about|then)\b", re.IGNORECASE)


def rewrite_followup(question: str, previous: str | None) -> str:
    """The retrieval query for ``question``: joined with the previous question when it reads as a follow-up
    (a pronoun that points back, a leading "and"/"what about", or four words or fewer). A previous
    message of two words or fewer ("hello!") carries no topic and is not used."""
    if not previous or len(previous.split()) <= 2:
        return question
    if _FOLLOWUP.search(question) or len(question.split()) <= 4:
        return f"{previous} {question}"
    return question


@dataclass
class ChatTurn:
    """One answer in the making: how it was decided, its citations, and its text as a stream."""

    kind: str  # "intent", "action", "retrieval", "dont_know", "direct"
    query: str
    citations: list[dict[str, Any]]
    pieces: Iterator[str]
    intent: str | None = None
    confidence: float | None = None
    session_id: str | None = None
    text: str = ""
    completion_tokens: int = 0
    _store: SessionStore | None = field(default=None, repr=False)

    def stream(self) -> Iterator[str]:
        """The answer piece by piece, script links neutralised; when it ends, it is saved to the session.

        Closing this stream before its end closes the backend's stream too (which stops a local
        generation or an upstream request); an answer left unfinished is not saved.
        """
        parts: list[str] = []
        try:
            for piece in safe_stream(self._counted()):
                parts.append(piece)
                yield piece
        finally:
            close = getattr(self.pieces, "close", None)
            if close is not None:
                close()  # this object keeps a reference, so the backend's generator is not closed for us
        self.text = "".join(parts)
        if self._store is not None and self.session_id is not None:
            self._store.append(self.session_id, "assistant", self.text)

    def _counted(self) -> Iterator[str]:
        for piece in self.pieces:
            self.completion_tokens += 1
            yield piece

    def collect(self) -> ChatTurn:
        """Run the stream to its end (``text`` is then set)."""
        for _ in self.stream():
            pass
        return self

    def extension(self) -> dict[str, Any]:
        """The ``aiforge`` extension object of an API response."""
        return {"kind": self.kind, "query": self.query, "intent": self.intent, "confidence": self.confidence,
                "session_id": self.session_id}


class ChatRuntime(Runtime):
    """A chat bundle: encoder graph, knowledge index, optional intents, a generation backend."""

    task = "chat"

    def __init__(self, path: Path, manifest: BundleManifest, *, threads: int | None = None,
                 sessions: SessionStore | None = None) -> None:
        super().__init__(path, manifest)

        p = self.pipeline
        try:
            self.retrieval: dict[str, Any] = dict(p["retrieval"])
            self.generation: dict[str, Any] = dict(p["generation"])
            self.conversation: dict[str, Any] = dict(p["conversation"])
            self.limits: dict[str, Any] = dict(p["limits"])
            encoder, tokenizer, max_length = p["encoder"], p["tokenizer"], int(p["max_length"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{path}: pipeline.json is incomplete ({exc}).") from exc
        self.precision = "fp32"
        self.encoder = OnnxEncoder(path / encoder, path / tokenizer, max_length=max_length, threads=threads)
        self.index = KnowledgeIndex(path)
        import_action_modules()
        self.intents = IntentModel.load(path)
        if self.intents is not None:

            for h in self.intents.handlers.values():
                if h.get("action"):
                    get_action(str(h["action"]))
        self.labels = list(self.intents.labels) if self.intents else []
        self.extractive = ExtractiveGenerator(self.index.sentence_vectors, self.index.sentences_of,
                                              self.index.sentence_span,
                                              max_sentences=int(self.generation.get("max_sentences", 3)))
        self.generator: Generator = self._local(p, threads) if self.generation.get("backend") == "local" \
            else make_generator(self.generation, extractive=self.extractive)
        self.sessions = sessions or SessionStore()
        self.rerank: dict[str, Any] | None = dict(p["rerank"]) if p.get("rerank") else None
        self.reranker: CrossEncoder | None = None
        self.focused: FocusedAnswer | None = None
        self._saved_rerank: tuple[dict[str, Any] | None, CrossEncoder | None, FocusedAnswer | None] | None = None
        if self.rerank is not None:
            try:
                self.reranker = CrossEncoder(path / str(self.rerank["graph"]), path / str(self.rerank["tokenizer"]),
                                             max_length=int(self.rerank["max_length"]), threads=threads)
                self.focused = FocusedAnswer(self.reranker, self.index, threshold=float(self.rerank["threshold"]),
                                             max_sentences=int(self.generation.get("max_sentences", 3)),
                                             margin=float(self.rerank.get("margin", 3.0)))
            except (KeyError, TypeError, ValueError) as exc:
                raise BundleError(f"{path}: pipeline.json rerank block is incomplete ({exc}).") from exc

    def _local(self, p: Mapping[str, Any], threads: int | None) -> OnnxLocalGenerator:
        """The ONNX SmolLM2 shipped in the bundle (its files verified with the manifest like every other)."""
        record = p.get("local_llm")
        if not isinstance(record, Mapping):
            raise BundleError(f"{self.path}: the local backend's ONNX model is missing from this bundle (built "
                              "before aiforge ran SmolLM2 through onnxruntime); rebuild it with `aiforge build SPEC`.")
        return OnnxLocalGenerator(self.path, dict(record), system_prompt=self.generation.get("system_prompt"),
                                  threads=threads)

    @classmethod
    def open(cls, path: Path, manifest: BundleManifest, *, precision: str = "auto",
             threads: int | None = None) -> ChatRuntime:
        return cls(path, manifest, threads=threads)

    # --- embeddings and intents ------------------------------------------------------------

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit-length MiniLM embeddings, one row per text."""
        return self.encoder.embed(texts)

    def parse_items(self, items: list[Any], where: str, limits: ItemLimits) -> list[Any]:
        if self.intents is None:
            raise InputError(f"{where}: this chat bundle has no intents to classify; use /v1/chat/completions")
        return [check_text(t, f"{where}[{i}]", max_chars=limits.max_text_chars) for i, t in enumerate(items)]

    def predict_proba(self, items: list[Any]) -> np.ndarray:
        """Intent probabilities (columns in ``labels`` order).

        Raises:
            InputError: the bundle has no intents.
        """
        if self.intents is None:
            raise InputError("this chat bundle has no intents to classify.")
        return self.intents.predict_proba(self.embed(list(items)))

    def warmup(self) -> None:
        self.embed(["warm up", "a slightly longer sentence to warm up the encoder graph"])
        if isinstance(self.generator, OnnxLocalGenerator):
            _ = self.generator.llm  # open the ONNX session now, not on the first question

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "backend": self.generation.get("backend"), "chunks": self.index.size,
                "sources": self.pipeline.get("sources", [])}

    # --- conversation -------------------------------------------------------------------------

    def check_messages(self, messages: object, *, where: str = "messages") -> list[dict[str, str]]:
        """Messages as ``[{"role", "content"}]``, within the bundle's limits.

        Raises:
            InputError: a message is malformed or over a limit (the message names it).
        """
        if not isinstance(messages, list) or not messages:
            raise InputError(f"{where}: expected a non-empty list of messages")
        if len(messages) > self.limits["max_messages"]:
            raise InputError(f"{where}: {len(messages)} messages, over the limit of {self.limits['max_messages']}")
        out = []
        for i, m in enumerate(messages):
            if not isinstance(m, Mapping):
                raise InputError(f"{where}[{i}]: expected an object with role and content")
            role, content = m.get("role"), m.get("content")
            if role not in ROLES:
                raise InputError(f"{where}[{i}].role: expected one of {list(ROLES)}, got {role!r}")
            if isinstance(content, list):  # OpenAI content parts: keep the text ones
                content = "".join(str(p.get("text", "")) for p in content
                                  if isinstance(p, Mapping) and p.get("type") == "text")
            if not isinstance(content, str):
                raise InputError(f"{where}[{i}].content: expected a string")
            self._check_text(content, f"{where}[{i}].content")
            out.append({"role": str(role), "content": content})
        if out[-1]["role"] != "user" or not out[-1]["content"].strip():
            raise InputError(f"{where}: the last message must be a non-empty user message")
        return out

    def check_texts(self, texts: list[str], *, where: str = "input") -> list[str]:
        """Texts to embed, within the bundle's limits.

        Raises:
            InputError: no text, too many, one too long or not valid Unicode (the message names it).
        """
        if not texts:
            raise InputError(f"{where}: at least one text is required")
        if len(texts) > self.limits["max_embedding_inputs"]:
            raise InputError(f"{where}: {len(texts)} texts, over the limit of {self.limits['max_embedding_inputs']}")
        for i, text in enumerate(texts):
            self._check_text(text, f"{where}[{i}]")
        return texts

    def _check_text(self, text: str, where: str) -> None:
        if len(text) > self.limits["max_message_chars"]:
            raise InputError(f"{where}: {len(text)} characters, over the limit of {self.limits['max_message_chars']}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate ("\ud800"): the tokenizer would fail on it
            raise InputError(f"{where}: not valid Unicode text (a lone surrogate at character {exc.start}); "
                             "send UTF-8 text") from None

    def respond(self, messages: list[dict[str, Any]], *, session_id: str | None = None,
                max_tokens: int | None = None, temperature: float | None = None,
                retrieval: bool = True, response_format: dict[str, Any] | None = None) -> ChatTurn:
        """Decide how to answer the last user message and return the answer as a stream.

        With ``session_id`` (made by ``sessions.create``), earlier turns come from the session store and
        this turn is saved there. ``response_format`` (OpenAI's) is given to the ``openai`` backend only.

        Raises:
            InputError: messages or settings break the bundle's limits, or there is no such session.
            GenerationError: ``retrieval=False`` with the extractive backend.
        """
        msgs = self.check_messages(messages)
        limit = int(self.limits["max_tokens"])
        if max_tokens is not None and not 0 < max_tokens <= limit:
            raise InputError(f"max_tokens: {max_tokens} is outside 1..{limit}")
        tokens = max_tokens or min(int(self.generation.get("max_tokens", 256)), limit)
        temp = float(self.generation.get("temperature", 0.0) if temperature is None else temperature)
        window = 2 * int(self.conversation.get("history_turns", 6))
        question = msgs[-1]["content"].strip()
        history = [m for m in msgs[:-1] if m["role"] != "system"]
        if session_id is not None:
            history = self.sessions.history(session_id, last=window) + history
            if not self.sessions.append(session_id, "user", question):
                raise InputError(f"session_id: no session {session_id!r}; start one with sessions.create() "
                                 "(over HTTP: POST /v1/chat/sessions)")
        history = history[-window:] if window else []
        store = self.sessions if session_id is not None else None

        def turn(kind: str, query: str, citations: list[dict[str, Any]], pieces: Iterator[str],
                 **kw: Any) -> ChatTurn:
            return ChatTurn(kind, query, citations, pieces, session_id=session_id, _store=store, **kw)

        if not retrieval:
            if self.generator is self.extractive:
                raise GenerationError("retrieval=false needs a generating backend (local or openai), "
                                      "not extractive")
            req = GenerationRequest(question, [], max_tokens=tokens, temperature=temp, raw_messages=msgs,
                                    response_format=response_format)
            return turn("direct", question, [], self.generator.stream(req))

        qvec = self.embed([question])[0]
        intent, confidence = None, None
        if self.intents is not None:
            intent, confidence, _ = self.intents.detect(qvec)
            if intent is not None:
                handler = self.intents.handlers.get(intent, {})
                if handler.get("response"):
                    return turn("intent", question, [], iter([str(handler["response"])]), intent=intent,
                                confidence=confidence)
                if handler.get("action"):

                    ctx = ActionContext(question, intent, confidence, self.describe())
                    text = get_action(str(handler["action"]))(ctx)
                    return turn("action", question, [], iter([text]), intent=intent, confidence=confidence)

        previous = next((m["content"] for m in reversed(history) if m["role"] == "user"), None)
        query = rewrite_followup(question, previous) if self.conversation.get("rewrite_followups", True) else question
        vec = qvec if query == question else self.embed([query])[0]
        hits = self.retrieve(query, vec)
        evidence = self.evidence(query, hits)
        if not self.answers(hits, vec, evidence):
            return turn("dont_know", query, [], iter([DONT_KNOW]), intent=intent, confidence=confidence)
        if self.rerank is not None:  # a generator reads only the passages above the threshold
            hits = hits[:1] + [h for h in hits[1:] if (h.relevance or 0.0) >= float(self.rerank["threshold"])]
        passages = [Passage(n, h.chunk_id, h.source, h.heading, h.text, h.similarity)
                    for n, h in enumerate(hits, start=1)]
        req = GenerationRequest(question, passages, history=history, max_tokens=tokens, temperature=temp,
                                query_vector=qvec, response_format=response_format)
        if self.generator is self.extractive and self.focused is not None:
            sentences = self.focused.select(query, hits, evidence)
            citations = [_citation(hits[n - 1], n) for n in sorted({s.n for s in sentences})]
            pieces = self.focused.stream(sentences)
        elif self.generator is self.extractive:
            chosen = self.extractive.select(req)
            used = sorted({p.n for p, _, _ in chosen})
            citations = [_citation(hits[n - 1], n) for n in used]
            pieces = self.extractive.stream(req)
        else:
            citations = [_citation(h, n) for n, h in enumerate(hits, start=1)]
            pieces = self.generator.stream(req)
        return turn("retrieval", query, citations, pieces, intent=intent, confidence=confidence)

    def search(self, query: str, vector: np.ndarray | None = None, *, k: int | None = None,
               mode: str | None = None) -> list[Hit]:
        """The best chunks for ``query`` with the bundle's retrieval settings."""
        r = self.retrieval
        vec = vector if vector is not None else self.embed([query])[0]
        return self.index.search(query, vec, k=k or int(r["k"]), mode=mode or str(r["mode"]),
                                 candidates=int(r["candidates"]), rrf_k=float(r["rrf_k"]),
                                 dense_weight=float(r["dense_weight"]))

    def use_reranker(self, on: bool) -> None:
        """Turn the bundle's reranker (and its abstention and focused answers) off or back on, e.g. to compare.

        Raises:
            BundleError: ``on`` for a bundle built without a reranker.
        """
        if on and not self.pipeline.get("rerank"):
            raise BundleError(f"{self.path}: this bundle has no reranker; add retrieval.rerank to its spec.")
        if not on and self.rerank is not None:
            self._saved_rerank = (self.rerank, self.reranker, self.focused)
            self.rerank, self.reranker, self.focused = None, None, None
        elif self._saved_rerank is not None:
            self.rerank, self.reranker, self.focused = self._saved_rerank

    def retrieve(self, query: str, vector: np.ndarray | None = None) -> list[Hit]:
        """The chunks an answer is written from: hybrid search, then the cross-encoder when the bundle has one."""
        if self.reranker is None or self.rerank is None:
            return self.search(query, vector)
        candidates = self.search(query, vector, k=int(self.rerank["candidates"]))
        return rerank_hits(self.reranker, query, candidates, k=int(self.retrieval["k"]))

    def evidence(self, query: str, hits: list[Hit]) -> Evidence | None:
        """The reranker's scores of the sentences of the best passages (None without a reranker, or when the
        best passage is already below the threshold: no sentence of it can answer)."""
        if self.focused is None or self.rerank is None or not hits or \
                (hits[0].relevance if hits[0].relevance is not None else -1e9) < float(self.rerank["threshold"]):
            return None
        return self.focused.evidence(query, hits)

    def answers(self, hits: list[Hit], vector: np.ndarray, evidence: Evidence | None = None) -> bool:
        """Whether the hits answer the query: the reranker's best passage logit against its calibrated
        threshold and, when the bundle calibrated one, its best sentence logit against the sentence threshold;
        or (without a reranker) the best cosine similarity against ``retrieval.min_score``."""
        if not hits:
            return False
        if self.rerank is not None:
            if (hits[0].relevance if hits[0].relevance is not None else -1e9) < float(self.rerank["threshold"]):
                return False
            sentence = self.rerank.get("sentence_threshold")
            return sentence is None or evidence is None or evidence.best >= float(sentence)
        return self.support(hits, vector) >= float(self.retrieval["min_score"])

    def support(self, hits: list[Hit], vector: np.ndarray) -> float:
        """How well the hits answer the query: the best cosine similarity of a retrieved chunk or of one of
        its sentences (a long chunk can hold the one sentence that matters)."""
        best = max((h.similarity for h in hits), default=-1.0)
        ids = [s for h in hits for s in self.index.sentences_of(h.chunk_id)]
        if ids:
            best = max(best, float((self.index.sentence_vectors[ids] @ vector).max()))
        return best

    def ask(self, question: str, *, session_id: str | None = None) -> ChatTurn:
        """One question, answered in full (the Python API of ``aiforge chat --ask``)."""
        return self.respond([{"role": "user", "content": question}], session_id=session_id).collect()


def _citation(hit: Hit, n: int) -> dict[str, Any]:
    snippet = plain_text(hit.text)  # documents are data: no markup or script link reaches a client
    return {"id": n, "source": hit.source, "heading": plain_text(hit.heading), "start": hit.start, "end": hit.end,
            "score": round(hit.score, 6), "similarity": round(hit.similarity, 4),
            "relevance": None if hit.relevance is None else round(hit.relevance, 3),
            "snippet": snippet[:240] + ("…" if len(snippet) > 240 else "")}

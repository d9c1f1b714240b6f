"""ChatSpec: the ``task: chat`` form of ``aiforge.yaml`` (no torch here).

::

    name: docs-assistant
    task: chat
    knowledge: {paths: [../../docs], chunk_tokens: 160, overlap_tokens: 32}
    retrieval: {k: 4, min_score: 0.3, rerank: {candidates: 10}}
    intents:
      items:
        - {name: greet, examples: [hi, hello there], response: "Hello! Ask me about the docs."}
    generation: {backend: extractive}
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from aiforge.audit.gates import ReleaseGates
from aiforge.spec import BaseSpec, DataPath

__all__ = ["ChatGates", "ChatLimits", "ChatSpec", "ConversationSpec", "GenerationSpec", "IntentSpec", "IntentsSpec",
           "KnowledgeSpec", "RerankSpec", "RetrievalSpec"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KnowledgeSpec(Strict):
    """Which documents to index and how to cut them into chunks."""

    paths: list[DataPath] = Field(default_factory=list)
    packages: list[str] = Field(
        default_factory=list,
        description="Folders inside installed Python packages, as 'package/sub/folder' (found without importing "
                    "the package), e.g. 'pygame/docs/generated/ref'.")
    include: list[str] = Field(default_factory=lambda: ["*.md", "*.markdown", "*.txt", "*.rst", "*.html", "*.htm",
                                                        "*.pdf"])
    exclude: list[str] = Field(default_factory=list)
    chunk_tokens: int = Field(default=160, ge=16, le=512)
    overlap_tokens: int = Field(default=32, ge=0, le=256)
    max_file_bytes: int = Field(default=20 << 20, gt=0)

    @model_validator(mode="after")
    def _overlap_below_window(self) -> KnowledgeSpec:
        if self.overlap_tokens >= self.chunk_tokens:
            raise ValueError("knowledge.overlap_tokens must be smaller than knowledge.chunk_tokens")
        return self


class RerankSpec(Strict):
    """The second retrieval stage: a cross-encoder over the fused candidates; abstention from its calibrated score."""

    model: Literal["ms-marco-minilm-l12"] = "ms-marco-minilm-l12"
    candidates: int = Field(default=5, ge=1, le=100, description="Fused chunks the cross-encoder re-scores "
                                                                  "(the best one was in the fused top 4 on every "
                                                                  "answerable question of bench/qa/pygame.jsonl).")
    max_length: int = Field(default=192, ge=32, le=512, description="Tokens of a (question, passage) pair.")
    threshold: float | None = Field(default=None, description="Fixed logit below which the answer is 'I don't "
                                                              "know'; None = calibrate at index time.")
    unanswerable: list[str] = Field(default_factory=list,
                                    description="Questions these documents do not answer (calibration negatives).")
    target_answered: float = Field(default=0.95, gt=0, le=1,
                                   description="Share of generated answerable questions the threshold keeps.")
    calibration_questions: int = Field(default=24, ge=2, le=200,
                                       description="Generated out-of-domain and in-domain questions, each side.")
    margin: float = Field(default=3.0, gt=0, description="Answer sentences within this logit of the best one.")
    sentences: bool = Field(default=True, description="Also abstain when no sentence of the best passages answers "
                                                      "(a second threshold, on the best sentence logit).")
    sentence_threshold: float | None = Field(default=None, description="Fixed sentence logit for that; None = "
                                                                       "calibrate at index time.")


class RetrievalSpec(Strict):
    """Hybrid retrieval: BM25 (SQLite FTS5) and dense MiniLM vectors fused by reciprocal rank, optionally reranked."""

    mode: Literal["hybrid", "bm25", "dense"] = "hybrid"
    k: int = Field(default=4, ge=1, le=20)
    candidates: int = Field(default=50, ge=1, le=1000)
    rrf_k: float = Field(default=60.0, gt=0)
    dense_weight: float = Field(default=0.7, ge=0, le=1)
    min_score: float = Field(default=0.25, ge=-1, le=1,
                             description="Cosine similarity of the best retrieved chunk or sentence below which "
                                         "the answer is 'I don't know' (without a reranker).")
    rerank: RerankSpec | None = Field(default=None, description="A cross-encoder second stage; {} turns it on.")


_INTENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class IntentSpec(Strict):
    """One intent: example utterances and what to do when it is detected."""

    name: str
    examples: list[str] = Field(min_length=2)
    response: str | None = None
    action: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _INTENT_NAME.match(v):
            raise ValueError("intent names are letters, digits, '_', '.', '-' (at most 64)")
        return v

    @model_validator(mode="after")
    def _one_handler(self) -> IntentSpec:
        if self.response is not None and self.action is not None:
            raise ValueError(f"intent {self.name!r}: give a response or an action, not both")
        return self


class IntentsSpec(Strict):
    """The optional intent layer (like Rasa's NLU), out-of-scope by a calibrated threshold.

    Examples come from ``items`` (inline) and from ``files``: CSV or JSONL with a ``text`` and an
    ``intent`` column (rows whose intent is ``out_of_scope_label`` are out-of-scope examples). An
    intent only in files has no response: it is detected, and the question goes on to retrieval.
    """

    items: list[IntentSpec] = Field(default_factory=list)
    files: list[DataPath] = Field(default_factory=list, description="CSV/JSONL files of (text, intent) examples.")
    out_of_scope_label: str = "out_of_scope"
    method: Literal["probability", "distance", "nearest"] = Field(
        default="probability", description="Out-of-scope score: the head's top probability (default), the "
                                           "Mahalanobis distance to the nearest intent mean, or (nearest) one "
                                           "minus the cosine to the nearest training example.")
    out_of_scope: list[str] = Field(default_factory=list,
                                    description="Utterances that belong to no intent; used to calibrate the threshold. "
                                                "When empty, sentences of the indexed documents stand in.")
    threshold: float | None = Field(default=None, gt=0,
                                    description="Fixed threshold (a distance, or a probability below 1 with method "
                                                "probability); None = calibrate.")
    target_in_scope_recall: float = Field(default=0.9, gt=0, le=1)
    min_example_similarity: float = Field(
        default=0.5, ge=-1, le=1,
        description="Also require this cosine similarity to one of the intent's own examples (0 turns it off).")
    C: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _unique(self) -> IntentsSpec:
        if len(self.items) < 2 and not self.files:
            raise ValueError("intents needs at least 2 items, or files of examples")
        names = [i.name for i in self.items]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"intent names must be unique; repeated: {dup}")
        return self


class GenerationSpec(Strict):
    """Which backend writes the answer: extractive (default), local SmolLM2 or an OpenAI-compatible upstream."""

    backend: Literal["extractive", "local", "openai"] = "extractive"
    base_url: str | None = None
    model: str | None = None
    api_key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    max_tokens: int = Field(default=256, ge=1, le=4096)
    temperature: float = Field(default=0.0, ge=0, le=2)
    timeout_s: float = Field(default=60.0, gt=0)
    max_sentences: int = Field(default=3, ge=1, le=10)
    local_precision: Literal["int8", "fp32", "int4"] = Field(
        default="int8", description="Graph of the local backend's SmolLM2: weight-only int8 (default, fastest "
                                    "with answers close to fp32's), fp32 (closest to transformers' greedy output) "
                                    "or int4.")
    system_prompt: str | None = None
    extra_body: dict[str, Any] = Field(default_factory=dict,
                                       description="Extra fields sent in each upstream request (openai backend).")

    @model_validator(mode="after")
    def _openai_needs_url(self) -> GenerationSpec:
        if self.backend == "openai" and not (self.base_url and self.model):
            raise ValueError("generation.backend 'openai' needs generation.base_url and generation.model")
        return self


class ConversationSpec(Strict):
    """History kept per session and follow-up rewriting."""

    history_turns: int = Field(default=6, ge=0, le=100)
    rewrite_followups: bool = True


class ChatLimits(Strict):
    """Guardrails a server applies to every chat request (4xx above them)."""

    max_messages: int = Field(default=50, ge=1)
    max_message_chars: int = Field(default=4000, ge=1)
    max_tokens: int = Field(default=1024, ge=1)
    max_embedding_inputs: int = Field(default=256, ge=1)


class ChatGates(ReleaseGates):
    """Release gates ``aiforge ship`` checks on a chat bundle; the intent gates need intents and ``--data``."""

    kind: ClassVar[str] = "chat"

    min_intent_accuracy: float | None = Field(default=None, ge=0, le=1)
    min_intent_macro_f1: float | None = Field(default=None, ge=0, le=1)


class ChatSpec(BaseSpec):
    """A chat assistant: knowledge to retrieve from, optional intents, a generation backend."""

    task: Literal["chat"] = "chat"
    backbone: str = "minilm-l6"
    knowledge: KnowledgeSpec = KnowledgeSpec()
    retrieval: RetrievalSpec = RetrievalSpec()
    intents: IntentsSpec | None = None
    generation: GenerationSpec = GenerationSpec()
    conversation: ConversationSpec = ConversationSpec()
    limits: ChatLimits = ChatLimits()
    gates: ChatGates = ChatGates()

    @model_validator(mode="after")
    def _something_to_answer_with(self) -> ChatSpec:
        if not self.knowledge.paths and not self.knowledge.packages and self.intents is None:
            raise ValueError("a chat spec needs knowledge.paths (or knowledge.packages), intents, or both")
        return self

"""What a chat build produces before it is written into a bundle: ``ChatFitResult``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiforge.audit.baseline import BaselineReport
from aiforge.bundle.parts import Parity
from aiforge.tasks.chat.index import IndexRows
from aiforge.tasks.chat.intents import IntentModel
from aiforge.tasks.chat.spec import ChatSpec

__all__ = ["ChatFitResult"]


@dataclass
class ChatFitResult:
    """What a build produced, before it is written into a bundle."""

    spec: ChatSpec
    encoder_dir: Path
    encoder_parity: Parity
    rows: IndexRows
    intents: IntentModel | None
    stats: dict[str, Any] = field(default_factory=dict)
    baseline: BaselineReport | None = None  # the intent head against its baselines (tasks/chat/baseline.py)
    reranker_dir: Path | None = None  # the cross-encoder's folder (model.onnx, tokenizer.json), when reranking
    abstention: dict[str, Any] | None = None  # the calibrated threshold on its best logit, and its trade-off
    llm_dir: Path | None = None  # the ONNX SmolLM2 export (llm.onnx, llm_tokenizer.json), for the local backend
    llm_record: dict[str, Any] | None = None  # its llm_export.json (hashes, parity against transformers)

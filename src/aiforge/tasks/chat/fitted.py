"""Build a chat bundle: ingest knowledge (re-using chunks of unchanged files), train intents, register.

Only the encoder export needs PyTorch, and it runs once per backbone (cached); chunks and
intent examples are embedded with the same ONNX graph the server uses, so index-time and
query-time vectors come from one model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiforge.tasks.chat.index import IndexRows
from aiforge.tasks.chat.intents import IntentModel
from aiforge.tasks.chat.spec import ChatSpec

__all__ = ["ChatBuild"]


@dataclass
class ChatBuild:
    """What a build produced, before it is written into a bundle."""

    spec: ChatSpec
    encoder_dir: Path
    encoder_parity: dict[str, Any]
    rows: IndexRows
    intents: IntentModel | None
    stats: dict[str, Any] = field(default_factory=dict)

"""ChatTask: ``aiforge train`` for ``task: chat`` (build the index, train intents, register the bundle)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from aiforge.bundle.registry import Registry
from aiforge.spec import BaseSpec
from aiforge.tasks.base import ExportResult, check_spec
from aiforge.tasks.chat.build import build_chat
from aiforge.tasks.chat.export import export_chat
from aiforge.tasks.chat.fitted import ChatBuild
from aiforge.tasks.chat.spec import ChatSpec

__all__ = ["ChatTask"]


class ChatTask:
    """Index the knowledge and train the intents a chat spec describes."""

    name = "chat"

    def fit(self, spec: BaseSpec, *, progress: bool = True, registry: Registry | None = None) -> ChatBuild:
        """Ingest, embed and train; chunks of files unchanged since the last version are re-used.

        Raises:
            DataError: a knowledge path is missing or unreadable.
            ExportError: the encoder failed its ONNX parity check.
        """
        check_spec(spec, ChatSpec)
        assert isinstance(spec, ChatSpec)
        return build_chat(spec, registry=registry, progress=progress)

    def export(self, spec: BaseSpec, result: ChatBuild, registry: Registry) -> ExportResult:
        """Write and register the chat bundle."""
        check_spec(spec, ChatSpec)
        record, manifest = export_chat(result, registry)
        return ExportResult(record, manifest, result.encoder_parity)

    def summarize(self, result: ChatBuild, exported: ExportResult) -> list[Any]:
        """Index statistics and the intent calibration."""
        s = result.stats
        table = Table(title=f"{exported.record.name}: indexed in {s['seconds']:.1f} s")
        for col in ("files", "added", "changed", "unchanged", "removed", "chunks", "embedded", "re-used"):
            table.add_column(col, justify="right")
        table.add_row(*(str(s[k]) for k in ("files", "added", "changed", "unchanged", "removed", "chunks",
                                             "embedded_chunks", "reused_chunks")))
        out: list[Any] = [table]
        if result.intents is not None:
            c = result.intents.calibration
            out.append(f"intents: {len(result.intents.labels)}, out-of-fold accuracy {c['out_of_fold_accuracy']:.3f}, "
                       f"out-of-scope threshold {result.intents.threshold:.3f} ({c['method']})")
        return out

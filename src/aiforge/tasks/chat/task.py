"""ChatTask: ``aiforge train`` for ``task: chat`` (build the index, train intents, register the bundle)."""

from __future__ import annotations

from rich.console import RenderableType
from rich.table import Table

from aiforge.bundle.parts import ExportResult
from aiforge.bundle.registry import Registry
from aiforge.spec import BaseSpec
from aiforge.tables import baseline_summary
from aiforge.tasks.base import check_spec
from aiforge.tasks.chat.build import build_chat
from aiforge.tasks.chat.export import export_chat
from aiforge.tasks.chat.fitted import ChatFitResult
from aiforge.tasks.chat.spec import ChatSpec

__all__ = ["ChatTask"]


class ChatTask:
    """Index the knowledge and train the intents a chat spec describes."""

    name = "chat"

    def fit(self, spec: BaseSpec, *, progress: bool = True, registry: Registry | None = None) -> ChatFitResult:
        """Ingest, embed and train; chunks of files unchanged since the last version are re-used.

        Raises:
            DataError: a knowledge path is missing or unreadable.
            ExportError: the encoder failed its ONNX parity check.
        """
        spec = check_spec(spec, ChatSpec)
        return build_chat(spec, registry=registry, progress=progress)

    def export(self, spec: BaseSpec, result: ChatFitResult, registry: Registry) -> ExportResult:
        """Write and register the chat bundle."""
        check_spec(spec, ChatSpec)
        return export_chat(result, registry)

    def summarize(self, result: ChatFitResult, exported: ExportResult) -> list[RenderableType]:
        """Index statistics and the intent calibration."""
        s = result.stats
        table = Table(title=f"{exported.record.name}: indexed in {s['seconds']:.1f} s")
        for col in ("files", "added", "changed", "unchanged", "removed", "chunks", "embedded", "re-used"):
            table.add_column(col, justify="right")
        table.add_row(*(str(s[k]) for k in ("files", "added", "changed", "unchanged", "removed", "chunks",
                                             "embedded_chunks", "reused_chunks")))
        out: list[RenderableType] = [table]
        if result.intents is not None:
            c = result.intents.calibration
            t = result.intents.distance_threshold
            t = result.intents.threshold if t is None else t
            out.append(f"intents: {len(result.intents.labels)}, out-of-fold accuracy {c['out_of_fold_accuracy']:.3f}, "
                       f"out-of-scope threshold {t:.3f} ({c['method']})")
            curve = Table(title="intent out-of-scope trade-off (out-of-fold; fix a point with intents.threshold)")
            for col in ("threshold", "in-scope accepted", "in-scope accuracy", "out-of-scope recall"):
                curve.add_column(col, justify="right")
            for p in c.get("curve", []):
                r = p.get("out_of_scope_recall")
                curve.add_row(f"{p['threshold']:.3f}", f"{p['in_scope_accepted']:.3f}", f"{p['in_scope_accuracy']:.3f}",
                              "n/a" if r is None else f"{r:.3f}")
            out.append(curve)
        return [*out, *baseline_summary(result.baseline)]

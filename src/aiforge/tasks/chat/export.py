"""Write a chat bundle: the cached encoder graph and tokenizer, the knowledge index and the intent head.

``write_chat_bundle`` is the kind's writer; ``export_chat`` hands it to the engine's ``export_bundle``,
which adds pipeline.json, metrics.json and card.md and registers the folder.
"""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path

from aiforge.bundle.parts import BundleParts, ExportResult, export_bundle
from aiforge.bundle.registry import Registry
from aiforge.hub.onnx_encoder import ENCODER_GRAPH, ENCODER_TOKENIZER
from aiforge.tasks.chat.fitted import ChatFitResult
from aiforge.tasks.chat.index import write_index

__all__ = ["export_chat", "write_chat_bundle"]


def export_chat(build: ChatFitResult, registry: Registry) -> ExportResult:
    """Write the bundle (encoder, index, intents, pipeline, metrics, card) and register it."""
    return export_bundle(registry, build.spec, partial(write_chat_bundle, build=build))


def write_chat_bundle(staged: Path, *, build: ChatFitResult) -> BundleParts:
    """The encoder, index and intent files of a chat bundle, and what the engine writes for it."""
    spec = build.spec
    shutil.copy2(build.encoder_dir / ENCODER_GRAPH, staged / ENCODER_GRAPH)
    shutil.copy2(build.encoder_dir / ENCODER_TOKENIZER, staged / ENCODER_TOKENIZER)
    write_index(staged, build.rows)
    if build.intents is not None:
        build.intents.save(staged)
    pipeline = {
        "task": "chat", "backbone": spec.backbone, "encoder": ENCODER_GRAPH, "tokenizer": ENCODER_TOKENIZER,
        "max_length": 256, "index_settings": build.stats["index_settings"],
        "sources": [f[0] for f in build.rows.files],
        "retrieval": spec.retrieval.model_dump(mode="json"),
        "generation": spec.generation.model_dump(mode="json"),
        "conversation": spec.conversation.model_dump(mode="json"),
        "limits": spec.limits.model_dump(mode="json"),
    }
    metrics = {"index": {k: v for k, v in build.stats.items() if k != "index_settings"},
               "encoder_parity": build.encoder_parity.to_dict(),
               "intents": build.intents.calibration if build.intents else None}
    headline = {"chunks": build.stats["chunks"], "files": build.stats["files"]}
    if build.intents is not None:
        headline["intents"] = len(build.intents.labels)
    return BundleParts(pipeline=pipeline, metrics=metrics, card=_card(build), parity=build.encoder_parity,
                       headline=headline, extra={"backbone": {"name": spec.backbone}}, baseline=build.baseline)


def _card(build: ChatFitResult) -> str:
    s, spec = build.stats, build.spec
    intents = (f"{len(build.intents.labels)} intents ({', '.join(build.intents.labels)}); out-of-scope threshold "
               f"{build.intents.threshold:.3f} ({build.intents.calibration['method']})." if build.intents else "none.")
    return f"""# {spec.name} (chat assistant)

## Intended use

Answers questions from {s['files']} indexed document(s) with citations, and says it does not know when no
chunk is similar enough (cosine < {spec.retrieval.min_score}). Generation backend: {spec.generation.backend}.

## Knowledge

{s['chunks']} chunks of {spec.knowledge.chunk_tokens} tokens (overlap {spec.knowledge.overlap_tokens}) from:
{chr(10).join(f'- {f[0]} ({f[2]} chunks, sha256 {f[1][:12]})' for f in build.rows.files) or '- (no documents)'}

## Intents

{intents}

## Encoder

{spec.backbone} as ONNX (mean pooling, L2 norm); max |ONNX - PyTorch| =
{build.encoder_parity.max_abs_diff:.2e} on {build.encoder_parity.samples} texts.

## Limits

Answers only restate retrieved text (extractive) or are generated from it (local/openai); a small
language model can still misstate what it read. Check the cited sources.
"""

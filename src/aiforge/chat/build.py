"""Build a chat bundle: ingest knowledge (re-using chunks of unchanged files), train intents, register.

Only the encoder export needs PyTorch, and it runs once per backbone (cached); chunks and
intent examples are embedded with the same ONNX graph the server uses, so index-time and
query-time vectors come from one model.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aiforge.bundle.registry import Registry
from aiforge.chat.encoder import ENCODER_GRAPH, ENCODER_TOKENIZER, OnnxEncoder
from aiforge.chat.index import IndexRows, KnowledgeIndex, write_index
from aiforge.chat.ingest import chunk_text, extract_text, find_files, sentence_spans
from aiforge.chat.intents import IntentModel, calibrate_threshold, fit_head, out_of_fold
from aiforge.chat.spec import ChatSpec, IntentsSpec
from aiforge.errors import AiforgeError, DataError
from aiforge.progress import progress_bar
from aiforge.version import __version__

__all__ = ["ChatBuild", "build_chat", "export_chat", "index_spec"]


@dataclass
class ChatBuild:
    """What a build produced, before it is written into a bundle."""

    spec: ChatSpec
    encoder_dir: Path
    encoder_parity: dict[str, Any]
    rows: IndexRows
    intents: IntentModel | None
    stats: dict[str, Any] = field(default_factory=dict)


def index_spec(directory: str | Path, *, name: str, backend: str = "extractive", **generation: Any) -> ChatSpec:
    """A default chat spec over one folder of documents (what ``aiforge index DIR`` uses).

    Raises:
        SpecError: a value is invalid.
    """
    raw = {"name": name, "task": "chat", "knowledge": {"paths": [str(Path(directory).resolve())]},
           "generation": {"backend": backend, **{k: v for k, v in generation.items() if v is not None}}}
    spec = ChatSpec.from_dict(raw, source=f"aiforge index {directory}")
    assert isinstance(spec, ChatSpec)
    return spec


def _previous(spec: ChatSpec, registry: Registry, settings: dict[str, Any]) -> KnowledgeIndex | None:
    """The index of the latest version of this bundle, if it was built with the same settings."""
    try:
        record = registry.get(spec.name)
    except AiforgeError:
        return None
    try:
        old = json.loads((record.path / "pipeline.json").read_text(encoding="utf-8"))
        if record.task != "chat" or old.get("index_settings") != settings:
            return None
        return KnowledgeIndex(record.path)
    except (OSError, ValueError, AiforgeError):
        return None


def _ingest(spec: ChatSpec, encoder: OnnxEncoder, previous: KnowledgeIndex | None,
            progress: bool) -> tuple[IndexRows, dict[str, Any]]:
    k = spec.knowledge
    files = find_files(list(k.paths), k.include, k.exclude, max_bytes=k.max_file_bytes) if k.paths else []
    if k.paths and not files:
        raise DataError(f"{', '.join(map(str, k.paths))}: no files matching {k.include} to index.")
    old_files = previous.files() if previous is not None else {}
    chunks: list[tuple[str, str, int, int, str, str | None]] = []
    vectors: list[np.ndarray] = []
    sentences: list[tuple[int, int, int]] = []
    sentence_vectors: list[np.ndarray] = []
    file_rows: list[tuple[str, str, int]] = []
    stats = {"files": len(files), "unchanged": 0, "changed": 0, "added": 0,
             "removed": len(set(old_files) - {f.rel for f in files}), "reused_chunks": 0, "embedded_chunks": 0}
    with progress_bar(len(files), "index", enabled=progress) as advance:
        for f in files:
            base = len(chunks)
            if previous is not None and old_files.get(f.rel, ("", 0))[0] == f.sha256:
                stats["unchanged"] += 1
                old_rows = previous.chunk_rows(f.rel)
                for cid, heading, start, end, text, label in old_rows:
                    chunks.append((f.rel, heading, start, end, text, label))
                    vectors.append(previous.vectors[cid][None, :])
                    for sid in previous.sentences_of(cid):
                        a, b = previous.sentence_span[sid]
                        sentences.append((len(chunks) - 1, a, b))
                        sentence_vectors.append(previous.sentence_vectors[sid][None, :])
                stats["reused_chunks"] += len(old_rows)
            else:
                stats["changed" if f.rel in old_files else "added"] += 1
                text, sections = extract_text(f.path)
                new = chunk_text(f.rel, text, sections, encoder.tokenizer, chunk_tokens=k.chunk_tokens,
                                 overlap_tokens=k.overlap_tokens)
                if new:
                    chunks.extend((c.source, c.heading, c.start, c.end, c.text, None) for c in new)
                    vectors.append(encoder.embed([f"{c.heading}\n{c.text}" for c in new]))
                    spans = [(base + i, a, b) for i, c in enumerate(new) for a, b in sentence_spans(c.text)]
                    sentences.extend(spans)
                    if spans:
                        sentence_vectors.append(encoder.embed([new[ci - base].text[a:b] for ci, a, b in spans]))
                stats["embedded_chunks"] += len(new)
            file_rows.append((f.rel, f.sha256, len(chunks) - base))
            advance(1)
    dim = encoder.dim
    rows = IndexRows(
        files=file_rows, chunks=chunks,
        vectors=np.vstack(vectors) if vectors else np.zeros((0, dim), np.float32),
        sentences=sentences,
        sentence_vectors=np.vstack(sentence_vectors) if sentence_vectors else np.zeros((0, dim), np.float32),
    )
    stats["chunks"] = len(chunks)
    stats["sentences"] = len(sentences)
    return rows, stats


def train_intents(spec: IntentsSpec, encoder: OnnxEncoder, *, fallback_oos: np.ndarray | None = None,
                  seed: int = 0) -> IntentModel:
    """Fit the intent head on the examples and calibrate the out-of-scope threshold.

    Out-of-scope examples are the spec's ``out_of_scope`` utterances or, when there are none,
    ``fallback_oos`` (embeddings of document sentences: what the knowledge answers is not an intent).

    Raises:
        DataError: too few examples to calibrate.
    """
    from aiforge.chat.actions import get_action, import_action_modules

    import_action_modules()
    labels = [i.name for i in spec.items]
    texts = [t for i in spec.items for t in i.examples]
    y = np.array([j for j, i in enumerate(spec.items) for _ in i.examples])
    x = encoder.embed(texts)
    for item in spec.items:
        if item.action:
            get_action(item.action)  # unknown actions fail the build, not the first request
    oof = out_of_fold(x, y, len(labels), C=spec.C)
    w, b = fit_head(x, y, len(labels), C=spec.C)
    oos_x = encoder.embed(spec.out_of_scope) if spec.out_of_scope else fallback_oos
    oos = None
    if oos_x is not None and len(oos_x):
        z = oos_x @ w.T + b
        z -= z.max(axis=1, keepdims=True)
        oos = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    calibration = calibrate_threshold(oof, y, oos, target_recall=spec.target_in_scope_recall)
    calibration["out_of_scope_source"] = ("spec" if spec.out_of_scope else
                                          "document sentences" if oos is not None else "none")
    threshold = spec.threshold if spec.threshold is not None else calibration["threshold"]
    calibration["chosen"] = "fixed in spec" if spec.threshold is not None else "calibrated"
    handlers = {i.name: {"response": i.response, "action": i.action} for i in spec.items}
    return IntentModel(labels, w, b, float(threshold), handlers, calibration, examples=x, example_labels=y,
                       min_example_similarity=spec.min_example_similarity)


def build_chat(spec: ChatSpec, *, registry: Registry | None = None, progress: bool = True) -> ChatBuild:
    """Ingest the knowledge, embed it, train intents; re-use chunks of files unchanged since the last version.

    Raises:
        DataError: a knowledge path is missing or a file unreadable.
        ExportError: the encoder export failed its parity check.
    """
    from aiforge.optimize.encoder_export import cached_encoder

    start = time.perf_counter()
    encoder_dir, parity = cached_encoder(spec.backbone)
    encoder = OnnxEncoder(encoder_dir / ENCODER_GRAPH, encoder_dir / ENCODER_TOKENIZER)
    settings = {"backbone": spec.backbone, "chunk_tokens": spec.knowledge.chunk_tokens,
                "overlap_tokens": spec.knowledge.overlap_tokens, "aiforge_version": __version__}
    previous = _previous(spec, registry or Registry(), settings)
    rows, stats = _ingest(spec, encoder, previous, progress)
    intents = None
    if spec.intents is not None:
        sv = rows.sentence_vectors
        pick = np.random.default_rng(0).permutation(len(sv))[:300]
        intents = train_intents(spec.intents, encoder, fallback_oos=sv[np.sort(pick)] if len(sv) else None)
    stats["seconds"] = time.perf_counter() - start
    stats["index_settings"] = settings
    return ChatBuild(spec, encoder_dir, parity, rows, intents, stats)


def export_chat(build: ChatBuild, registry: Registry) -> tuple[Any, Any]:
    """Write the bundle (encoder, index, intents, pipeline, metrics, card) and register it."""
    spec = build.spec
    with registry.staging() as staged:
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
        (staged / "pipeline.json").write_text(json.dumps(pipeline, indent=2), encoding="utf-8")
        metrics = {"index": {k: v for k, v in build.stats.items() if k != "index_settings"},
                   "encoder_parity": build.encoder_parity,
                   "intents": build.intents.calibration if build.intents else None}
        (staged / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
        (staged / "card.md").write_text(_card(build), encoding="utf-8")
    headline = {"chunks": build.stats["chunks"], "files": build.stats["files"]}
    if build.intents is not None:
        headline["intents"] = len(build.intents.labels)
    extra = {"aiforge_version": __version__, "backbone": {"name": spec.backbone}, "metrics": headline,
             "parity": build.encoder_parity, "spec": spec.model_dump(mode="json")}
    return registry.add(staged, name=spec.name, task="chat", extra=extra, metrics=headline)


def _card(build: ChatBuild) -> str:
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
{build.encoder_parity['onnx_vs_torch_max_abs_diff']:.2e} on {build.encoder_parity['samples']} texts.

## Limits

Answers only restate retrieved text (extractive) or are generated from it (local/openai); a small
language model can still misstate what it read. Check the cited sources.
"""

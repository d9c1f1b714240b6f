"""Build a chat bundle: ingest knowledge (re-using chunks of unchanged files), train intents, register.

Only the encoder export needs PyTorch, and it runs once per backbone (cached); chunks and
intent examples are embedded with the same ONNX graph the server uses, so index-time and
query-time vectors come from one model.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from aiforge.audit.baseline import BaselineReport, skipped_report
from aiforge.bundle.parts import Parity
from aiforge.bundle.registry import Registry
from aiforge.errors import AiforgeError, DataError
from aiforge.hub.encoder_export import cached_encoder
from aiforge.hub.onnx_encoder import ENCODER_GRAPH, ENCODER_TOKENIZER, OnnxEncoder
from aiforge.progress import progress_bar
from aiforge.tasks.chat.actions import get_action, import_action_modules
from aiforge.tasks.chat.baseline import intent_baselines
from aiforge.tasks.chat.data import chunk_text, extract_text, find_files, sentence_spans
from aiforge.tasks.chat.fitted import ChatFitResult
from aiforge.tasks.chat.index import IndexRows, KnowledgeIndex
from aiforge.tasks.chat.intents import IntentModel, calibrate_threshold, fit_head, out_of_fold
from aiforge.tasks.chat.spec import ChatSpec, IntentsSpec
from aiforge.version import __version__

__all__ = ["build_chat", "index_spec"]


def index_spec(directory: str | Path, *, name: str, backend: str = "extractive", **generation: Any) -> ChatSpec:
    """A default chat spec over one folder of documents (what ``aiforge index DIR`` uses).

    Raises:
        SpecError: a value is invalid.
    """
    raw = {"name": name, "task": "chat", "knowledge": {"paths": [str(Path(directory).resolve())]},
           "generation": {"backend": backend, **{k: v for k, v in generation.items() if v is not None}}}
    return ChatSpec.from_dict(raw, source=f"aiforge index {directory}")


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


def build_chat(spec: ChatSpec, *, registry: Registry | None = None, progress: bool = True) -> ChatFitResult:
    """Ingest the knowledge, embed it, train intents; re-use chunks of files unchanged since the last version.

    Raises:
        DataError: a knowledge path is missing or a file unreadable.
        ExportError: the encoder export failed its parity check.
    """

    start = time.perf_counter()
    encoder_dir, parity = cached_encoder(spec.backbone)  # parity as the hub's parity.json stores it
    encoder = OnnxEncoder(encoder_dir / ENCODER_GRAPH, encoder_dir / ENCODER_TOKENIZER)
    settings = {"backbone": spec.backbone, "chunk_tokens": spec.knowledge.chunk_tokens,
                "overlap_tokens": spec.knowledge.overlap_tokens, "aiforge_version": __version__}
    previous = _previous(spec, registry or Registry(), settings)
    rows, stats = _ingest(spec, encoder, previous, progress)
    intents, baseline = None, None
    if spec.intents is not None:
        sv = rows.sentence_vectors
        pick = np.random.default_rng(0).permutation(len(sv))[:300]
        trained = time.perf_counter()
        intents = train_intents(spec.intents, encoder, fallback_oos=sv[np.sort(pick)] if len(sv) else None)
        baseline = _intent_baseline(spec, intents, time.perf_counter() - trained)
    stats["seconds"] = time.perf_counter() - start
    stats["index_settings"] = settings
    encoder_parity = Parity.from_dict(parity, diff_key="onnx_vs_torch_max_abs_diff")
    return ChatFitResult(spec, encoder_dir, encoder_parity, rows, intents, stats, baseline)


def _intent_baseline(spec: ChatSpec, intents: IntentModel, fit_seconds: float) -> BaselineReport:
    """The intent head against majority class and TF-IDF nearest neighbour, on the head's own folds."""
    if not spec.baseline or spec.intents is None:
        return skipped_report("accuracy")
    if intents.examples is None or intents.example_labels is None:
        return skipped_report("accuracy", "the intent model keeps no examples to compare on")
    texts = [t for i in spec.intents.items for t in i.examples]
    # the same (seeded) folds train_intents calibrated on, so the comparison is paired example by example
    oof = out_of_fold(intents.examples, intents.example_labels, len(intents.labels), C=spec.intents.C)
    return intent_baselines(texts, intents.example_labels, oof, fit_seconds=fit_seconds)

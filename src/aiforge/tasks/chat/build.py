"""Build a chat bundle: ingest knowledge (re-using chunks of unchanged files), train intents, register.

Only the encoder export needs PyTorch, and it runs once per backbone (cached); chunks and
intent examples are embedded with the same ONNX graph the server uses, so index-time and
query-time vectors come from one model.
"""

from __future__ import annotations

import importlib.util
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from aiforge.audit.baseline import BaselineReport, skipped_report
from aiforge.audit.out_of_scope import calibrate_rejection
from aiforge.bundle.parts import Parity
from aiforge.bundle.registry import Registry
from aiforge.data.readers import read_table
from aiforge.errors import AiforgeError, DataError
from aiforge.hub.catalog import get_backbone
from aiforge.hub.encoder_export import cached_encoder
from aiforge.hub.onnx_encoder import ENCODER_GRAPH, ENCODER_TOKENIZER, OnnxEncoder
from aiforge.hub.reranker import CrossEncoder
from aiforge.progress import progress_bar
from aiforge.tasks.chat.actions import get_action, import_action_modules
from aiforge.tasks.chat.baseline import intent_baselines
from aiforge.tasks.chat.data import chunk_text, extract_text, find_files, sentence_spans
from aiforge.tasks.chat.fitted import ChatFitResult
from aiforge.tasks.chat.index import Hit, IndexRows, KnowledgeIndex, write_index
from aiforge.tasks.chat.intents import (
    IntentModel,
    calibrate_threshold,
    fit_head,
    fit_scorer,
    out_of_fold,
    out_of_fold_distances,
)
from aiforge.tasks.chat.llm_export import cached_local_llm
from aiforge.tasks.chat.rerank import calibrate_abstention, rerank_hits
from aiforge.tasks.chat.spec import ChatSpec, IntentsSpec, RetrievalSpec
from aiforge.version import __version__

__all__ = ["build_chat", "fit_intents", "index_spec"]


def index_spec(directory: str | Path, *, name: str, backend: str = "extractive", **generation: Any) -> ChatSpec:
    """A default chat spec over one folder of documents (what ``aiforge index DIR`` uses).

    Raises:
        SpecError: a value is invalid.
    """
    raw = {"name": name, "task": "chat", "knowledge": {"paths": [str(Path(directory).resolve())]},
           "generation": {"backend": backend, **{k: v for k, v in generation.items() if v is not None}}}
    return ChatSpec.from_dict(raw, source=f"aiforge index {directory}")


def package_folder(entry: str) -> Path:
    """The folder ``package/sub/folder`` names inside an installed package (found without importing it).

    Raises:
        DataError: the package is not installed or has no such folder.
    """
    package, _, sub = entry.strip("/").partition("/")
    try:
        found = importlib.util.find_spec(package) if package.isidentifier() else None
    except (ImportError, ValueError):
        found = None
    locations = list(found.submodule_search_locations or []) if found is not None else []
    if not locations:
        raise DataError(f"knowledge.packages: {entry!r}: no installed package {package!r}. Install it with pip, or "
                        "give a folder in knowledge.paths.")
    folder = Path(locations[0]) / sub
    if not folder.exists():
        raise DataError(f"knowledge.packages: {entry!r}: {folder} does not exist in the installed {package!r}.")
    return folder


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
    roots = [*k.paths, *(package_folder(p) for p in k.packages)]
    files = find_files(roots, k.include, k.exclude, max_bytes=k.max_file_bytes) if roots else []
    if roots and not files:
        raise DataError(f"{', '.join(map(str, roots))}: no files matching {k.include} to index.")
    old_files = previous.files() if previous is not None else {}
    chunks: list[tuple[str, str, int, int, str, str | None, str | None]] = []
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
                for cid, heading, start, end, text, label, definition in old_rows:
                    chunks.append((f.rel, heading, start, end, text, label, definition))
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
                    chunks.extend((c.source, c.heading, c.start, c.end, c.text, None, c.definition) for c in new)
                    vectors.append(encoder.embed([f"{c.heading}\n{c.text}" for c in new]))
                    spans = [(base + i, a, b) for i, c in enumerate(new) for a, b in sentence_spans(c.text)]
                    sentences.extend(spans)
                    if spans:
                        sentence_vectors.append(_embed_unique(encoder, [new[ci - base].text[a:b]
                                                                        for ci, a, b in spans]))
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


def _embed_unique(encoder: OnnxEncoder, texts: list[str]) -> np.ndarray:
    """``encoder.embed(texts)``, each distinct text embedded once (overlapping chunks repeat their sentences)."""
    unique = list(dict.fromkeys(texts))
    where = {t: i for i, t in enumerate(unique)}
    return encoder.embed(unique)[[where[t] for t in texts]]


def intent_examples(spec: IntentsSpec) -> tuple[list[str], list[str], list[int], list[str]]:
    """(labels, texts, label index per text, out-of-scope texts) from ``items`` and ``files``.

    Raises:
        DataError: a file lacks the text or intent column, or fewer than 2 intents in all.
    """
    labels = [i.name for i in spec.items]
    texts = [t for i in spec.items for t in i.examples]
    names = [i.name for i in spec.items for _ in i.examples]
    oos = list(spec.out_of_scope)
    for path in spec.files:
        df = read_table(Path(path))
        label = "intent" if "intent" in df.columns else "label"
        missing = [c for c in ("text", label) if c not in df.columns]
        if missing:
            raise DataError(f"{path}: column(s) {missing} not found. Columns are {list(df.columns)}. Intent files "
                            "need a 'text' and an 'intent' column (one example per row).")
        for t, y in zip(df["text"].astype(str), df[label].astype(str), strict=True):
            if not t.strip():
                continue
            if y == spec.out_of_scope_label:
                oos.append(t)
            else:
                names.append(y)
                texts.append(t)
    labels += sorted(set(names) - set(labels))
    if len(labels) < 2:
        raise DataError(f"intents: {len(labels)} intent(s) found; the intent layer needs at least 2.")
    index = {y: i for i, y in enumerate(labels)}
    return labels, texts, [index[y] for y in names], oos


def train_intents(spec: IntentsSpec, encoder: OnnxEncoder, *, fallback_oos: np.ndarray | None = None,
                  seed: int = 0) -> IntentModel:
    """Fit the intent head on the examples and calibrate the out-of-scope threshold.

    Out-of-scope examples are the spec's ``out_of_scope`` utterances and the files' out-of-scope
    rows or, when there are none, ``fallback_oos`` (embeddings of document sentences: what the
    knowledge answers is not an intent). The calibration record holds the whole in-scope /
    out-of-scope trade-off curve (``curve``), so another point can be picked and fixed with
    ``intents.threshold``.

    Raises:
        DataError: too few examples to calibrate.
    """

    import_action_modules()
    labels, texts, idx, oos_texts = intent_examples(spec)
    y = np.array(idx)
    x = encoder.embed(texts)
    for item in spec.items:
        if item.action:
            get_action(item.action)  # unknown actions fail the build, not the first request
    oos_x = encoder.embed(oos_texts) if oos_texts else fallback_oos
    source = "spec" if oos_texts else "document sentences" if oos_x is not None and len(oos_x) else "none"
    handlers = {i.name: {"response": i.response, "action": i.action} for i in spec.items}
    handlers.update({name: {"response": None, "action": None} for name in labels if name not in handlers})
    return fit_intents(spec, labels, x, y, oos_x, source=source, handlers=handlers, seed=seed)


_SCORES = {"distance": "squared Mahalanobis distance to the nearest intent mean (out-of-fold)",
           "nearest": "one minus the cosine to the nearest training example (out-of-fold)"}


def fit_intents(spec: IntentsSpec, labels: list[str], x: np.ndarray, y: np.ndarray, oos_x: np.ndarray | None, *,
                source: str, handlers: dict[str, dict[str, str | None]], seed: int = 0) -> IntentModel:
    """The intent model from unit embeddings ``x`` of the examples (labels ``y``) and of out-of-scope texts.

    Raises:
        DataError: too few examples to calibrate.
    """
    oof = out_of_fold(x, y, len(labels), C=spec.C)
    w, b = fit_head(x, y, len(labels), C=spec.C)
    if spec.method in _SCORES:
        scorer = fit_scorer(spec.method, x, y, len(labels))
        oof_score = out_of_fold_distances(x, y, len(labels), seed=seed, method=spec.method)
        oos_score = scorer.score(oos_x) if oos_x is not None and len(oos_x) else None
        calibration = calibrate_rejection(oof_score, oof.argmax(1) == y, oos_score,
                                          target_in_scope_recall=spec.target_in_scope_recall)
        calibration.update(out_of_scope_source=source, out_of_fold_accuracy=float((oof.argmax(1) == y).mean()),
                           score=_SCORES[spec.method])
        threshold = spec.threshold if spec.threshold is not None else calibration["threshold"]
        calibration["chosen"] = "fixed in spec" if spec.threshold is not None else "calibrated"
        return IntentModel(labels, w, b, 0.0, handlers, calibration, examples=x, example_labels=y,
                           scorer=scorer, distance_threshold=float(threshold))
    oos = None
    if oos_x is not None and len(oos_x):
        z = oos_x @ w.T + b
        z -= z.max(axis=1, keepdims=True)
        oos = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    calibration = calibrate_threshold(oof, y, oos, target_recall=spec.target_in_scope_recall)
    calibration["out_of_scope_source"] = source
    conf, right = oof.max(1), oof.argmax(1) == y
    calibration["curve"] = [{"threshold": float(t), "in_scope_accepted": float((conf >= t).mean()),
                             "in_scope_accuracy": float(((conf >= t) & right).mean()),
                             "out_of_scope_recall": None if oos is None else float((oos.max(1) < t).mean())}
                            for t in np.linspace(0.05, 0.95, 19)]
    threshold = spec.threshold if spec.threshold is not None else calibration["threshold"]
    calibration["chosen"] = "fixed in spec" if spec.threshold is not None else "calibrated"
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
    reranker_dir, abstention = None, None
    if spec.retrieval.rerank is not None:
        reranker_dir = get_backbone(spec.retrieval.rerank.model).path()
        abstention = calibrate_reranker(spec.retrieval, rows, encoder, reranker_dir)
    local = spec.generation.backend == "local"
    llm_dir, llm_record = cached_local_llm(spec.generation.local_precision) if local else (None, None)
    stats["seconds"] = time.perf_counter() - start
    stats["index_settings"] = settings
    encoder_parity = Parity.from_dict(parity, diff_key="onnx_vs_torch_max_abs_diff")
    return ChatFitResult(spec, encoder_dir, encoder_parity, rows, intents, stats, baseline=baseline,
                         reranker_dir=reranker_dir, abstention=abstention, llm_dir=llm_dir, llm_record=llm_record)


def _intent_baseline(spec: ChatSpec, intents: IntentModel, fit_seconds: float) -> BaselineReport:
    """The intent head against majority class and TF-IDF nearest neighbour, on the head's own folds."""
    if not spec.baseline or spec.intents is None:
        return skipped_report("accuracy")
    if intents.examples is None or intents.example_labels is None:
        return skipped_report("accuracy", "the intent model keeps no examples to compare on")
    _, texts, _, _ = intent_examples(spec.intents)  # the texts the head was fitted on, in its order
    # the same (seeded) folds train_intents calibrated on, so the comparison is paired example by example
    oof = out_of_fold(intents.examples, intents.example_labels, len(intents.labels), C=spec.intents.C)
    return intent_baselines(texts, intents.example_labels, oof, fit_seconds=fit_seconds)


def calibrate_reranker(retrieval: RetrievalSpec, rows: IndexRows, encoder: OnnxEncoder,
                       reranker_dir: Path) -> dict[str, Any]:
    """The abstention threshold on the reranker's best logit, calibrated on this index (see ``rerank.py``)."""
    r = retrieval.rerank
    if r is None:
        raise ValueError("calibrate_reranker needs retrieval.rerank")
    reranker = CrossEncoder(reranker_dir / "model.onnx", reranker_dir / "tokenizer.json", max_length=r.max_length)
    with tempfile.TemporaryDirectory(prefix="aiforge-calibrate-") as tmp:
        write_index(Path(tmp), rows)
        index = KnowledgeIndex(Path(tmp))

        def search(question: str, excluded: str | None = None) -> list[Hit]:
            vec = encoder.embed([question])[0]
            hits = index.search(question, vec, k=r.candidates if excluded is None else retrieval.candidates,
                                mode=retrieval.mode, candidates=retrieval.candidates, rrf_k=retrieval.rrf_k,
                                dense_weight=retrieval.dense_weight)
            if excluded is not None:  # a close-domain negative: the question's own page left out
                hits = [h for h in hits if h.source != excluded][: r.candidates]
            return rerank_hits(reranker, question, hits, k=retrieval.k)

        if index.size == 0:
            return {"threshold": r.threshold if r.threshold is not None else 0.0, "method": "no documents"}
        cal = calibrate_abstention(search, reranker, index, unanswerable=r.unanswerable,
                                   n_generated=r.calibration_questions, margin=r.margin, fixed=r.threshold,
                                   fixed_sentence=r.sentence_threshold, target_answered=r.target_answered,
                                   sentences=r.sentences)
        return cal.to_dict()

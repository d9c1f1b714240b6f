"""Write a chat bundle: the cached encoder graph and tokenizer, the knowledge index and the intent head.

``write_chat_bundle`` is the kind's writer; ``export_chat`` hands it to the engine's ``export_bundle``,
which adds pipeline.json, metrics.json and card.md and registers the folder.
"""

from __future__ import annotations

import os
import shutil
from functools import partial
from pathlib import Path
from typing import Any

from aiforge.bundle.parts import BundleParts, ExportResult, export_bundle
from aiforge.bundle.registry import Registry
from aiforge.hub.catalog import get_backbone
from aiforge.hub.onnx_encoder import ENCODER_GRAPH, ENCODER_TOKENIZER
from aiforge.hub.reranker import RERANKER_GRAPH, RERANKER_TOKENIZER
from aiforge.tasks.chat.fitted import ChatFitResult
from aiforge.tasks.chat.index import write_index
from aiforge.tasks.chat.local_llm import LLM_GRAPH, LLM_TOKENIZER

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
    extra: dict[str, object] = {"backbone": {"name": spec.backbone}}
    rerank = spec.retrieval.rerank
    if rerank is not None and build.reranker_dir is not None and build.abstention is not None:
        shutil.copy2(build.reranker_dir / "model.onnx", staged / RERANKER_GRAPH)
        shutil.copy2(build.reranker_dir / "tokenizer.json", staged / RERANKER_TOKENIZER)
        pipeline["rerank"] = {**rerank.model_dump(mode="json", exclude={"unanswerable"}), "graph": RERANKER_GRAPH,
                              "tokenizer": RERANKER_TOKENIZER, "threshold": build.abstention["threshold"],
                              "sentence_threshold": build.abstention.get("sentence_threshold")}
        extra["reranker"] = get_backbone(rerank.model).record()
    if build.llm_dir is not None and build.llm_record is not None:
        record = build.llm_record
        _link_or_copy(build.llm_dir / str(record["graph"]), staged / LLM_GRAPH)
        _link_or_copy(build.llm_dir / str(record["tokenizer"]), staged / LLM_TOKENIZER)
        pipeline["local_llm"] = {"graph": LLM_GRAPH, "tokenizer": LLM_TOKENIZER,
                                 "eos_token_id": record["eos_token_id"], "precision": record["precision"],
                                 "model": record["model"], "gguf_sha256": record["gguf_sha256"]}
    metrics = {"index": {k: v for k, v in build.stats.items() if k != "index_settings"},
               "encoder_parity": build.encoder_parity.to_dict(),
               "intents": build.intents.calibration if build.intents else None,
               "abstention": build.abstention,
               "local_llm": build.llm_record["parity"] if build.llm_record else None}
    headline = {"chunks": build.stats["chunks"], "files": build.stats["files"]}
    if build.intents is not None:
        headline["intents"] = len(build.intents.labels)
    return BundleParts(pipeline=pipeline, metrics=metrics, card=_card(build), parity=build.encoder_parity,
                       headline=headline, extra=extra, baseline=build.baseline)


def _link_or_copy(src: Path, dst: Path) -> None:
    """``dst`` as a hard link to the cached ``src`` (no second copy on disk), or a copy across file systems."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _intents_card(build: ChatFitResult) -> str:
    m = build.intents
    if m is None:
        return "none."
    t = m.threshold if m.distance_threshold is None else m.distance_threshold
    c = m.calibration
    shown = ", ".join(m.labels[:20]) + (f", … ({len(m.labels)} in all)" if len(m.labels) > 20 else "")
    rows = "\n".join(
        f"| {p['threshold']:.3f} | {p['in_scope_accepted']:.3f} | {p['in_scope_accuracy']:.3f} | "
        f"{'n/a' if p.get('out_of_scope_recall') is None else format(p['out_of_scope_recall'], '.3f')} |"
        for p in c.get("curve", [])[::2])
    return (f"{len(m.labels)} intents ({shown}); out-of-scope threshold {t:.3f} ({c['method']}; "
            f"{c.get('score', 'top probability of the head')}; out-of-scope examples: "
            f"{c.get('out_of_scope_source')}).\n\nThe trade-off (out-of-fold; pick a point and fix it with "
            "`intents.threshold`; every point is in metrics.json):\n\n"
            "| threshold | in-scope accepted | in-scope accuracy | out-of-scope recall |\n|---|---|---|---|\n" + rows)


def _abstention_card(build: ChatFitResult) -> str:
    a = build.abstention
    if a is None:
        return f"cosine similarity of the best chunk or sentence below {build.spec.retrieval.min_score}."
    q = a.get("questions", {})
    return (f"the cross-encoder reranker's best logit below {a['threshold']:.2f} ({a['method']}). Calibrated at index "
            f"time on {q.get('generated_answerable', 0)} questions generated from the documents, "
            f"{q.get('generated_out_of_domain', 0)} out-of-domain questions and {q.get('user_unanswerable', 0)} "
            f"unanswerable questions from the spec: at this threshold {a.get('answerable_answered', 0):.0%} of the "
            f"generated answerable questions are answered and {a.get('unanswerable_refused', 0):.0%} of the "
            "unanswerable ones refused (the whole curve is in metrics.json, abstention.curve). Generated questions "
            "are easier than real ones: measure on your own questions with `aiforge eval BUNDLE --data qa.jsonl`."
            + _sentence_card(a))


def _sentence_card(a: dict[str, Any]) -> str:
    if a.get("sentence_threshold") is None:
        return ""
    q, p = a.get("questions", {}), a.get("passage_only", {})
    kinds = ", ".join(f"{k} {v:.0%}" for k, v in a.get("unanswerable_refused_by_kind", {}).items())
    return (f" Then the sentence evidence: when no sentence of the best passages scores {a['sentence_threshold']:.2f} "
            f"or more, the answer is \"I don't know\" too ({a.get('sentence_method', '')}). Its close-domain negatives "
            f"are {q.get('generated_close_domain', 0)} generated questions asked with their own page left out of the "
            f"index. Passage threshold alone: {p.get('answerable_answered', 0):.0%} answered, "
            f"{p.get('unanswerable_refused', 0):.0%} refused; both thresholds: {a.get('answerable_answered', 0):.0%} "
            f"answered, {a.get('unanswerable_refused', 0):.0%} refused ({kinds}); the curve is "
            "abstention.sentence_curve.")


def _llm_card(build: ChatFitResult) -> str:
    r = build.llm_record
    if r is None:
        return ""
    rows = r["parity"]["prompts"]
    same = sum(1 for row in rows if row["equal"])
    return (f"\n## Local model\n\n{r['model']} ({r['gguf']}, sha256 {r['gguf_sha256'][:12]}) as an ONNX decoder with a "
            f"KV cache ({r['precision']}), run by onnxruntime without PyTorch; greedy tokens equal transformers' on "
            f"{same}/{len(rows)} parity prompts ({r['parity']['max_new_tokens']} tokens each).\n")


def _card(build: ChatFitResult) -> str:
    s, spec = build.stats, build.spec
    intents = _intents_card(build)
    return f"""# {spec.name} (chat assistant)

## Intended use

Answers questions from {s['files']} indexed document(s) with citations, and says it does not know when
{_abstention_card(build)} Generation backend: {spec.generation.backend}.

## Knowledge

{s['chunks']} chunks of {spec.knowledge.chunk_tokens} tokens (overlap {spec.knowledge.overlap_tokens}) from:
{chr(10).join(f'- {f[0]} ({f[2]} chunks, sha256 {f[1][:12]})' for f in build.rows.files) or '- (no documents)'}

## Intents

{intents}

## Encoder

{spec.backbone} as ONNX (mean pooling, L2 norm); max |ONNX - PyTorch| =
{build.encoder_parity.max_abs_diff:.2e} on {build.encoder_parity.samples} texts.
{_llm_card(build)}
## Limits

Answers only restate retrieved text (extractive) or are generated from it (local/openai); a small
language model can still misstate what it read. Check the cited sources.
"""

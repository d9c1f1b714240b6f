"""Chat assistant benchmarks: BANKING77 intents and out-of-scope rejection, kNN retrieval (BM25, dense,
hybrid), the local SmolLM2 (ONNX vs transformers, in bench/chat_local.py), extractive answer latency over
HTTP, and the docs-assistant transcript.

    python bench/chat.py [--parts intents,retrieval,local,http,transcript,qa,oos_text,oos_chat,rerank_http]
                         [--duration 15]

The answer-quality parts (qa, oos_text, oos_chat, rerank_http) are in bench/chat_answers.py.

Writes bench/results/chat.json and prints a table. BANKING77 comes from ../shared/data/banking77.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import chat_answers
import chat_local
from _common import RESULTS, machine, shared_data, write_result
from aiforge.hub.encoder_export import cached_encoder
from aiforge.hub.onnx_encoder import OnnxEncoder
from aiforge.tasks.chat.evaluate import labelled_index
from aiforge.tasks.chat.index import KnowledgeIndex, rrf_fuse
from aiforge.tasks.chat.intents import calibrate_threshold, fit_head, out_of_fold
from aiforge.tasks.chat.spec import ChatSpec, IntentsSpec, RetrievalSpec

N_UNKNOWN = 10
SEED = 0


def _rows(name: str) -> list[dict[str, str]]:
    with (shared_data() / "banking77" / name).open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def intents(xtr: np.ndarray, ytr: list[str], xte: np.ndarray, yte: list[str]) -> dict[str, Any]:
    """Accuracy on all 77 intents; then 10 intents held out as unknown, threshold calibrated on train only."""
    C = IntentsSpec.model_fields["C"].default
    target = IntentsSpec.model_fields["target_in_scope_recall"].default
    labels = sorted(set(ytr))
    idx = {y: i for i, y in enumerate(labels)}
    y_tr = np.array([idx[y] for y in ytr])
    y_te = np.array([idx[y] for y in yte])
    t0 = time.perf_counter()
    w, b = fit_head(xtr, y_tr, len(labels), C=C)
    full_acc = float(((xte @ w.T + b).argmax(1) == y_te).mean())
    fit_s = time.perf_counter() - t0

    rng = np.random.default_rng(SEED)
    unknown = sorted(rng.choice(labels, size=N_UNKNOWN, replace=False).tolist())
    known = [y for y in labels if y not in unknown]
    kidx = {y: i for i, y in enumerate(known)}
    tr = np.array([y in kidx for y in ytr])
    te_in = np.array([y in kidx for y in yte])
    yk_tr = np.array([kidx[y] for y, keep in zip(ytr, tr, strict=True) if keep])
    yk_te = np.array([kidx[y] for y, keep in zip(yte, te_in, strict=True) if keep])
    oof = out_of_fold(xtr[tr], yk_tr, len(known), C=C, folds=5, seed=SEED)
    cal = calibrate_threshold(oof, yk_tr, None, target_recall=target)
    wk, bk = fit_head(xtr[tr], yk_tr, len(known), C=C)
    p_in = _softmax(xte[te_in] @ wk.T + bk)
    p_out = _softmax(xte[~te_in] @ wk.T + bk)

    def at(t: float) -> dict[str, float]:
        accepted = p_in.max(1) >= t
        return {"threshold": t, "out_of_scope_recall": float((p_out.max(1) < t).mean()),
                "in_scope_accuracy": float((accepted & (p_in.argmax(1) == yk_te)).mean()),
                "in_scope_accepted": float(accepted.mean())}

    chosen = at(cal["threshold"])
    return {
        "all_77": {"test_accuracy": full_acc, "train": len(ytr), "test": len(yte), "fit_seconds": fit_s,
                   "head": f"multinomial logistic regression (C={C}) on MiniLM embeddings (ONNX encoder)"},
        "out_of_scope": {
            "unknown_intents": unknown, "known_intents": len(known),
            "test_in_scope": int(te_in.sum()), "test_out_of_scope": int((~te_in).sum()),
            "calibration": cal, "at_chosen_threshold": chosen,
            "in_scope_accuracy_without_rejection": float((p_in.argmax(1) == yk_te).mean()),
            "curve": [at(t) for t in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)],
        },
    }


def _rank_metrics(ranked: list[list[int]], label_of: list[str], truth: list[str]) -> dict[str, float]:
    h1 = h5 = rr = 0.0
    for ids, y in zip(ranked, truth, strict=True):
        first = next((r for r, cid in enumerate(ids, start=1) if label_of[cid] == y), None)
        h1 += first == 1
        h5 += first is not None and first <= 5
        rr += 1.0 / first if first else 0.0
    n = len(truth)
    return {"hit_at_1": h1 / n, "hit_at_5": h5 / n, "mrr": rr / n}


def _rankings(index: KnowledgeIndex, queries: list[str], qv: np.ndarray, depth: int) -> tuple[list[list[int]], ...]:
    bm25 = [index.bm25(q, depth) for q in queries]
    dense = [index.dense(v, depth)[0] for v in qv]
    return bm25, dense


def _fused(bm25: list[list[int]], dense: list[list[int]], w: float, k: float, depth: int) -> list[list[int]]:
    return [[cid for cid, _ in rrf_fuse([d, b], [w, 1 - w], k=k)[:depth]] for b, d in zip(bm25, dense, strict=True)]


def retrieval(xtr: np.ndarray, ytr: list[str], ttr: list[str], xte: np.ndarray, yte: list[str], tte: list[str],
              enc: OnnxEncoder, work: Path) -> dict[str, Any]:
    """kNN retrieval: train utterances indexed with their intent, test utterances as queries."""
    r = RetrievalSpec()
    depth = r.candidates
    # the fusion weight is chosen on a validation split of train (10%), never on test
    rng = np.random.default_rng(SEED)
    val = np.zeros(len(ytr), bool)
    val[rng.permutation(len(ytr))[: len(ytr) // 10]] = True
    fit_idx = labelled_index(work / "val", [t for t, v in zip(ttr, val, strict=True) if not v],
                             [y for y, v in zip(ytr, val, strict=True) if not v], enc, vectors=xtr[~val])
    vq = [t for t, v in zip(ttr, val, strict=True) if v]
    vy = [y for y, v in zip(ytr, val, strict=True) if v]
    vb, vd = _rankings(fit_idx, vq, xtr[val], depth)
    fit_labels = [y for y, v in zip(ytr, val, strict=True) if not v]
    grid = [0.3, 0.5, 0.6, 0.7, 0.8, 0.9]
    val_mrr = {w: _rank_metrics(_fused(vb, vd, w, r.rrf_k, depth), fit_labels, vy)["mrr"] for w in grid}
    best_w = max(grid, key=lambda w: (val_mrr[w], -abs(w - r.dense_weight)))

    index = labelled_index(work / "full", ttr, ytr, enc, vectors=xtr)
    t0 = time.perf_counter()
    bm25, dense = _rankings(index, tte, xte, depth)
    rank_s = time.perf_counter() - t0
    out: dict[str, Any] = {
        "index_size": len(ttr), "queries": len(tte), "candidates": depth, "rrf_k": r.rrf_k,
        "bm25": _rank_metrics(bm25, ytr, yte), "dense": _rank_metrics(dense, ytr, yte),
        f"hybrid_default_w{r.dense_weight}": _rank_metrics(_fused(bm25, dense, r.dense_weight, r.rrf_k, depth), ytr,
                                                           yte),
        "hybrid_equal_w0.5": _rank_metrics(_fused(bm25, dense, 0.5, r.rrf_k, depth), ytr, yte),
        "validation_mrr_by_dense_weight": val_mrr, "chosen_dense_weight": best_w,
        "hybrid": _rank_metrics(_fused(bm25, dense, best_w, r.rrf_k, depth), ytr, yte),
        "ms_per_query_bm25_plus_dense": rank_s / len(tte) * 1000,
    }
    h, b, d = out["hybrid"], out["bm25"], out["dense"]
    out["hybrid_beats_both"] = all(h[m] > max(b[m], d[m]) for m in ("hit_at_1", "hit_at_5", "mrr"))
    return out


QUESTIONS = [
    "What does the server do when its queue is full?", "How are API keys stored?",
    "What happens when a request takes too long?", "When is the server ready?",
    "How does the batcher form batches?", "What does a bundle contain?",
    "How is int8 quantization checked?", "Which errors does the server return as JSON?",
]


def http_latency(home: Path, duration: float) -> dict[str, Any]:
    """p50/p99 of full extractive answers through POST /v1/chat/completions (docs-assistant bundle)."""
    from aiforge.serve.loadgen import aiforge_server_args, free_port, measure_levels, running_server
    from aiforge.tasks.chat.api import demo_spec, index_folder

    built = index_folder(spec_file=demo_spec(), home=home, progress=False)
    port = free_port()
    env = dict(os.environ, AIFORGE_HOME=str(home), TOKENIZERS_PARALLELISM="false")
    name = built.exported.record.name
    bodies = [json.dumps({"model": name, "messages": [{"role": "user", "content": q}]}).encode() for q in QUESTIONS]
    with running_server(aiforge_server_args([str(built.exported.path)], port=port), port=port, env=env,
                        stop_timeout=30) as (_, ready):
        levels = measure_levels(f"http://127.0.0.1:{port}", "/v1/chat/completions", [], bodies=bodies,
                                levels=[1, 16], duration=duration)
    return {"bundle": "docs-assistant (extractive)", "chunks": built.build.stats["chunks"],
            "ready_seconds": ready, "duration_s": duration, "levels": levels}


def transcript(home: Path) -> list[dict[str, Any]]:
    from aiforge.tasks.chat.api import run_demo

    _, turns = run_demo(home=home)
    return [{"user": q, "assistant": t.text, "kind": t.kind, "intent": t.intent, "retrieval_query": t.query,
             "citations": [{k: c[k] for k in ("id", "source", "heading", "start", "end")} for c in t.citations]}
            for q, t in turns]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", default="intents,retrieval,local,http,transcript")
    ap.add_argument("--duration", type=float, default=15.0)
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    work = Path(tempfile.mkdtemp(prefix="aiforge-bench-chat-"))
    os.environ.setdefault("AIFORGE_CACHE", str(work / "cache"))
    previous = RESULTS / "chat.json"
    result: dict[str, Any] = json.loads(previous.read_text()) if previous.is_file() else {}
    result["machine"] = machine()
    if parts & {"intents", "retrieval", "oos_chat"}:
        folder, parity = cached_encoder(ChatSpec.model_fields["backbone"].default)
        enc = OnnxEncoder(folder / "encoder.onnx", folder / "encoder_tokenizer.json")
        tr, te = _rows("train.csv"), _rows("test.csv")
        ttr, ytr = [r["text"] for r in tr], [r["category"] for r in tr]
        tte, yte = [r["text"] for r in te], [r["category"] for r in te]
        t0 = time.perf_counter()
        xtr, xte = enc.embed(ttr), enc.embed(tte)
        result["embedding"] = {"texts": len(ttr) + len(tte), "seconds": time.perf_counter() - t0,
                               "encoder_parity": parity}
        if "intents" in parts:
            result["intents"] = intents(xtr, ytr, xte, yte)
        if "retrieval" in parts:
            result["retrieval"] = retrieval(xtr, ytr, ttr, xte, yte, tte, enc, work)
        if "oos_chat" in parts:
            result["out_of_scope_chat_intents"] = chat_answers.oos_chat(xtr, ytr, xte, yte)
    if "qa" in parts:
        result["qa"] = {**chat_answers.qa(work / "home-qa"), "load_average_1m": os.getloadavg()[0]}
    if "oos_text" in parts:
        result["out_of_scope_text_classification"] = chat_answers.oos_text(work / "home-oos")
    if "rerank_http" in parts:
        result["rerank_http"] = {**chat_answers.rerank_http(work / "home-qa", args.duration),  # qa's bundle
                                 "load_average_1m": os.getloadavg()[0]}
    if "local" in parts:
        result["local_llm"] = {**chat_local.local_llm(work / "local"), "uptime": chat_local.uptime()}
    if "http" in parts:
        result["extractive_http"] = {**http_latency(work / "home-http", args.duration),
                                     "load_average_1m": os.getloadavg()[0]}
    if "transcript" in parts:
        result["transcript"] = transcript(work / "home-transcript")
    path = write_result("chat", result)
    _print(result)
    print(f"wrote {path}")


def _print(r: dict[str, Any]) -> None:
    if "intents" in r:
        i = r["intents"]
        o = i["out_of_scope"]["at_chosen_threshold"]
        print(f"intents: 77-way test accuracy {i['all_77']['test_accuracy']:.4f}; 10 unknown: threshold "
              f"{o['threshold']:.3f}, out-of-scope recall {o['out_of_scope_recall']:.3f}, in-scope accuracy "
              f"{o['in_scope_accuracy']:.4f}")
    if "retrieval" in r:
        print(f"{'retrieval':<22}{'hit@1':>8}{'hit@5':>8}{'MRR':>8}")
        for key in ("bm25", "dense", "hybrid"):
            m = r["retrieval"][key]
            print(f"{key:<22}{m['hit_at_1']:>8.4f}{m['hit_at_5']:>8.4f}{m['mrr']:>8.4f}")
        print(f"(hybrid dense weight {r['retrieval']['chosen_dense_weight']} chosen on validation)")
    if "local_llm" in r:
        chat_local.print_summary(r["local_llm"])
    if "qa" in r:
        for key in ("hybrid_alone", "hybrid_with_reranker"):
            q = r["qa"][key]
            print(f"QA {key:<22} gold cited {q['gold_cited']:.3f}, contains {q['answer_contains']:.3f}, "
                  f"unanswerable refused {q['unanswerable_refused']:.3f}, answerable refused "
                  f"{q['answerable_refused']:.3f}, p50 {q['latency_ms_p50']:.0f} ms")
    if "out_of_scope_chat_intents" in r:
        for key, v in r["out_of_scope_chat_intents"].items():
            if isinstance(v, dict) and "out_of_scope_recall" in v:
                print(f"chat intents {key:<28} OOS recall {v['out_of_scope_recall']:.3f}, in-scope accuracy "
                      f"{v['in_scope_accuracy']:.3f}")
    if "out_of_scope_text_classification" in r:
        t = r["out_of_scope_text_classification"]["test"]
        print(f"text-classification OOS: recall {t['out_of_scope_recall']:.3f}, in-scope accuracy "
              f"{t['in_scope_accuracy']:.3f}")
    if "rerank_http" in r:
        for key in ("without_reranker", "with_reranker"):
            for lv in r["rerank_http"][key]["levels"]:
                print(f"{key} c={lv['concurrency']}: p50 {lv['p50_ms']:.1f} ms, p99 {lv['p99_ms']:.1f} ms")
    if "extractive_http" in r:
        for lv in r["extractive_http"]["levels"]:
            print(f"extractive HTTP c={lv['concurrency']}: p50 {lv['p50_ms']:.1f} ms, p99 {lv['p99_ms']:.1f} ms, "
                  f"{lv['throughput_rps']:.1f} req/s")


if __name__ == "__main__":
    main()

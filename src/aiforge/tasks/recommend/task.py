"""Recommendation: fit and compare recommenders on a per-user split, export the chosen one.

``fit`` loads and splits the interactions, embeds item text when a content model needs it,
tunes each algorithm (the shipped one and those in ``model.compare``) on the validation
split, refits it on the training split and scores it on the test split next to popularity,
then draws the re-ranking curve of the shipped model. ``export`` writes the ONNX scorer,
id maps, item metadata, histories, metrics, card and the HTML report, and registers them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from aiforge.bundle.parts import ExportResult, export_bundle
from aiforge.bundle.registry import Registry
from aiforge.spec import BaseSpec
from aiforge.tables import baseline_summary
from aiforge.tasks.base import check_spec
from aiforge.tasks.recommend.baseline import recommend_baselines
from aiforge.tasks.recommend.data import Interactions, Split, load_interactions, split_interactions
from aiforge.tasks.recommend.embed import embed_texts
from aiforge.tasks.recommend.evaluate import Trial, evaluate_parts, tune
from aiforge.tasks.recommend.export import write_recommender
from aiforge.tasks.recommend.fitted import ModelReport, RecommendFitResult
from aiforge.tasks.recommend.models import DEFAULT_GRIDS, FitContext, fit_parts
from aiforge.tasks.recommend.scoring import ScoringParts
from aiforge.tasks.recommend.spec import RecommendSpec

if TYPE_CHECKING:
    from rich.console import RenderableType

__all__ = ["RecommendationTask", "fit_recommenders"]


_ORDER = ["popularity", "als", "bpr", "item-knn", "ease", "content", "hybrid"]


def fit_recommenders(spec: RecommendSpec, data: Interactions, split: Split, *, embeddings: np.ndarray | None,
                     algorithms: Sequence[str],
                     log: Any = None) -> tuple[dict[str, ModelReport], dict[str, ScoringParts]]:
    """Tune (if asked) on validation, refit on train, score on test; every algorithm in order."""
    k = spec.model.k
    ctx = FitContext(embeddings=embeddings, min_item_positives=spec.model.min_item_positives,
                     threads=spec.model.threads, seed=spec.split.seed)
    x_fit, x_val = data.matrix(split.fit), data.matrix(split.validation)
    x_train, x_test = data.matrix(split.train), data.matrix(split.test)
    reports: dict[str, ModelReport] = {}
    parts: dict[str, ScoringParts] = {}
    for alg in sorted(set(algorithms), key=_ORDER.index):
        start = time.perf_counter()
        base = dict(reports["ease"].params) if alg == "hybrid" and "ease" in reports else {}
        if alg == "hybrid" and not base and spec.model.search:
            base, _ = tune("ease", x_fit, x_val, ctx, k=k)
        base.update(spec.model.params if alg == spec.model.algorithm else {})
        grid = spec.model.grid if (alg == spec.model.algorithm and spec.model.grid) else DEFAULT_GRIDS.get(alg, {})
        trials: list[Trial] = []
        params = base
        if spec.model.search and grid:
            params, trials = tune(alg, x_fit, x_val, ctx, k=k, grid=grid, base=base)
        fitted = fit_parts(alg, x_train, params, ctx)
        if alg == spec.model.algorithm and spec.rerank.popularity_penalty:
            fitted = fitted.with_penalty(spec.rerank.popularity_penalty)
        test = evaluate_parts(fitted, x_train, x_test, k)
        reports[alg] = ModelReport(alg, params, trials, test, time.perf_counter() - start)
        parts[alg] = fitted
        if log:
            log(f"{alg}: NDCG@{k} {test.ndcg:.4f} ({params})")
    return reports, parts


class RecommendationTask:
    """Fit, compare and export recommenders as a RecommendSpec says."""

    name = "recommendation"

    def fit(self, spec: BaseSpec, *, progress: bool = True) -> RecommendFitResult:
        """Load, split, tune, evaluate (next to popularity) and draw the re-ranking curve.

        Raises:
            DataError: a data check failed.
            SpecError: a bad parameter, or a content model without item text.
            BackboneError: the text encoder is missing.
        """
        spec = check_spec(spec, RecommendSpec)
        start = time.perf_counter()
        data = load_interactions(spec.data)
        s = spec.split
        split = split_interactions(data, kind=s.kind, test_fraction=s.test_fraction,
                                   validation_fraction=s.validation_fraction, seed=s.seed,
                                   min_user_positives=s.min_user_positives)
        algorithms = list(dict.fromkeys([spec.model.algorithm, "popularity", *spec.model.compare]))
        embeddings = None
        if {"content", "hybrid"} & set(algorithms):

            embeddings = embed_texts(data.texts, backbone=spec.model.backbone, progress=progress)
        reports, parts = fit_recommenders(spec, data, split, embeddings=embeddings, algorithms=algorithms)
        chosen = parts[spec.model.algorithm]
        x_train, x_test = data.matrix(split.train), data.matrix(split.test)
        curve = []
        for penalty in sorted(set(spec.rerank.curve) | {spec.rerank.popularity_penalty}):
            m = evaluate_parts(chosen.with_penalty(penalty), x_train, x_test, spec.model.k)
            curve.append({"penalty": penalty, **m.to_dict()})
        fit_seconds = time.perf_counter() - start
        trials = reports[spec.model.algorithm].trials
        ctx = FitContext(embeddings=embeddings, min_item_positives=spec.model.min_item_positives,
                         threads=spec.model.threads, seed=spec.split.seed)
        baseline = recommend_baselines(
            algorithm=spec.model.algorithm, model=chosen, model_validation=max((t.ndcg for t in trials), default=None),
            x_fit=data.matrix(split.fit), x_val=data.matrix(split.validation), x_train=x_train, x_test=x_test,
            ctx=ctx, k=spec.model.k, fit_seconds=fit_seconds, enabled=spec.baseline)
        return RecommendFitResult(data, split, chosen, spec.model.algorithm, reports, curve, fit_seconds,
                                  history=x_train, baseline=baseline)

    def export(self, spec: BaseSpec, result: RecommendFitResult, registry: Registry) -> ExportResult:
        """Write the scorer (ONNX, faiss when asked), id maps, metadata, metrics, card, report; register.

        Raises:
            ExportError: the ONNX graph disagrees with the numpy scores.
            SpecError: a faiss index was asked for a model that is not factor-based.
        """

        spec = check_spec(spec, RecommendSpec)
        return export_bundle(registry, spec, partial(write_recommender, spec=spec, result=result))

    def summarize(self, result: RecommendFitResult, exported: ExportResult) -> list[RenderableType]:
        """The model comparison and the re-ranking curve as tables, for ``aiforge train``."""
        from rich.table import Table

        k = next(iter(result.reports.values())).test.k
        table = Table(title=f"{exported.record.name}: test split, k={k} (shipped: {result.algorithm})")
        cols = ["precision", "recall", "ndcg", "map", "hit_rate", "coverage", "gini", "long_tail_share"]
        table.add_column("model")
        for c in cols:
            table.add_column(c, justify="right")
        for alg, r in result.reports.items():
            d = r.test.to_dict()
            table.add_row(alg, *(f"{d[c]:.4f}" for c in cols))
        curve = Table(title="popularity re-ranking")
        for c in ("penalty", "ndcg", "coverage", "long_tail_share"):
            curve.add_column(c, justify="right")
        for row in result.curve:
            curve.add_row(*(f"{row[c]:.4f}" for c in ("penalty", "ndcg", "coverage", "long_tail_share")))
        p = exported.parity
        return [table, curve, *baseline_summary(result.baseline), f"ONNX vs numpy: max |Δscore| {p.max_abs_diff:.2e}, "
                              f"top-{k} overlap {p.details['topk_overlap']:.4f}; index: {p.details['index']}"]

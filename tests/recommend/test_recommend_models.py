"""Every recommender on a real MovieLens slice: fits, beats popularity, and its ONNX graph
scores exactly as numpy does; re-ranking trades accuracy for coverage; faiss recall."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aiforge.errors import SpecError
from aiforge.spec import BaseSpec
from aiforge.tasks.recommend.data import load_interactions, split_interactions
from aiforge.tasks.recommend.evaluate import cold_start_hit_rate, evaluate_parts
from aiforge.tasks.recommend.graph import build_graph, bundle_order, check_parity, permute, write_faiss_index
from aiforge.tasks.recommend.models import DEFAULT_GRIDS, FitContext, ease_matrix, fit_parts
from aiforge.tasks.recommend.scoring import ScoringParts

PARAMS = {"popularity": {}, "als": {"factors": 32}, "bpr": {"factors": 32, "iterations": 50},
          "item-knn": {"K": 20}, "ease": {"l2": 100.0}, "content": {"popularity_weight": 0.5},
          "hybrid": {"l2": 100.0, "content_weight": 0.1, "impute_scale": 0.5}}


@pytest.fixture(scope="module")
def setup(rec_bundle) -> dict[str, object]:
    fit = rec_bundle.fit
    data, split = fit.data, fit.split
    emb = fit.parts.content  # the session's hybrid already embedded the slice's item texts (in item order)
    assert emb is not None and emb.shape[0] == data.n_items
    return {"data": data, "split": split, "ctx": FitContext(embeddings=emb), "x_train": data.matrix(split.train),
            "x_test": data.matrix(split.test)}


@pytest.fixture(scope="module")
def fitted(setup: dict[str, object]) -> dict[str, ScoringParts]:
    return {alg: fit_parts(alg, setup["x_train"], p, setup["ctx"]) for alg, p in PARAMS.items()}  # type: ignore[arg-type]


def test_every_model_beats_popularity_on_the_slice(setup, fitted) -> None:
    ndcg = {a: evaluate_parts(p, setup["x_train"], setup["x_test"], 10).ndcg for a, p in fitted.items()}
    for alg in ("als", "bpr", "item-knn", "ease", "hybrid", "content"):
        assert ndcg[alg] > ndcg["popularity"], ndcg
    assert ndcg["ease"] > ndcg["als"], ndcg  # the item-item regression is strongest on MovieLens


@pytest.mark.parametrize("alg", list(PARAMS))
def test_onnx_graph_matches_numpy_scores(setup, fitted, alg: str, tmp_path: Path) -> None:
    import onnx

    parts = fitted[alg].with_penalty(0.2)
    b = permute(parts, bundle_order(parts))
    onnx.save(build_graph(b), str(tmp_path / "g.onnx"))  # type: ignore[arg-type]
    hist = setup["x_train"][:, bundle_order(parts)][:40].toarray()
    vecs = b.user_factors[:40] if b.user_factors is not None else None
    parity = check_parity(b, tmp_path / "g.onnx", hist, hist, vecs, 10)
    assert parity["max_abs_score_diff"] < 1e-4 and parity["topk_overlap"] >= 0.99


def test_ease_matrix_is_the_closed_form() -> None:
    rng = np.random.default_rng(0)
    from scipy import sparse

    x = sparse.csr_matrix((rng.random((50, 8)) < 0.4).astype(np.float32))
    b = ease_matrix(x, 2.0)
    assert np.allclose(np.diag(b), 0)
    g = (x.T @ x).toarray() + 2.0 * np.eye(8)
    # B minimises ||X - XB||^2 + l2 ||B||^2 with diag(B) = 0: the gradient off the diagonal is zero
    grad = g @ b - (x.T @ x).toarray()
    off = ~np.eye(8, dtype=bool)
    assert np.abs(grad[off]).max() < 1e-3


def test_popularity_penalty_raises_coverage_and_long_tail(setup, fitted) -> None:
    base = evaluate_parts(fitted["ease"], setup["x_train"], setup["x_test"], 10)
    pen = evaluate_parts(fitted["ease"].with_penalty(1.0), setup["x_train"], setup["x_test"], 10)
    assert pen.coverage > base.coverage and pen.long_tail_share > base.long_tail_share
    assert pen.avg_popularity < base.avg_popularity


def test_cold_items_content_and_hybrid_beat_random(setup) -> None:
    data, split = setup["data"], setup["split"]
    rng = np.random.default_rng(0)
    counts = np.bincount(data.item_idx, minlength=data.n_items)
    cold = np.sort(rng.choice(np.flatnonzero(counts >= 5), size=40, replace=False))
    keep = ~np.isin(data.item_idx, cold) & split.train
    x_train = data.matrix(keep)
    truth = data.matrix(split.test)
    models = {a: fit_parts(a, x_train, PARAMS[a], setup["ctx"]) for a in ("content", "hybrid")}
    cs = cold_start_hit_rate(models, x_train, truth, cold, 10, random_draws=5)
    assert cs.users > 10
    assert cs.hit_rate["content"] > cs.hit_rate["random"] and cs.hit_rate["hybrid"] > cs.hit_rate["random"], cs


def test_unknown_algorithm_and_missing_text_are_spec_errors(setup) -> None:
    with pytest.raises(SpecError, match="unknown 'svd'"):
        fit_parts("svd", setup["x_train"], {}, setup["ctx"])
    with pytest.raises(SpecError, match="needs item text"):
        fit_parts("content", setup["x_train"], {}, FitContext(embeddings=None))
    assert set(DEFAULT_GRIDS) == set(PARAMS)


def test_faiss_index_recall_against_exact(tmp_path: Path) -> None:
    import faiss

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((50, 32)).astype(np.float32)  # factors cluster, as learned ones do
    items = (centres[rng.integers(0, 50, 5000)] + 0.5 * rng.standard_normal((5000, 32))).astype(np.float32)
    users = (centres[rng.integers(0, 50, 50)] + 0.5 * rng.standard_normal((50, 32))).astype(np.float32)
    write_faiss_index(items, tmp_path / "i.faiss")
    index = faiss.read_index(str(tmp_path / "i.faiss"))
    _, got = index.search(users, 10)
    exact = np.argsort(-(users @ items.T), axis=1)[:, :10]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got.tolist(), exact.tolist(), strict=True)])
    assert recall > 0.9


def test_faiss_bundle_serves_like_the_exact_graph(make_rec_spec, ml_slice, tmp_path: Path) -> None:
    from aiforge import App, load

    results = {}
    for index in ("exact", "faiss"):
        spec = BaseSpec.from_dict(make_rec_spec(*ml_slice, name=f"als-{index}", model={
            "algorithm": "als", "compare": [], "search": False, "params": {"factors": 16}}, export={"index": index}))
        app = App(spec, home=tmp_path)
        app.fit(progress=False)
        rt = load(app.export().path)
        assert rt.describe()["index"] == index
        users = rt.user_ids[:20]  # type: ignore[attr-defined]
        results[index] = [[r["item"] for r in rt.recommend(u, k=10, filter={"genres": "Drama"})["recommendations"]]
                          for u in users]
        results[index + "-new"] = [r["item"] for r in rt.recommend(items=rt.item_ids[:3], k=5)["recommendations"]]
    # a small catalogue gets so few inverted lists that all are probed: the same answers as exact
    assert results["faiss"] == results["exact"]
    assert results["faiss-new"] == results["exact-new"]


def test_faiss_export_is_refused_for_item_item_models(make_rec_spec, ml_slice, tmp_path: Path) -> None:
    from aiforge import App

    spec = BaseSpec.from_dict(make_rec_spec(*ml_slice, model={"algorithm": "ease", "compare": [], "search": False},
                                            export={"index": "faiss"}))
    app = App(spec, home=tmp_path)
    app.fit(progress=False)
    with pytest.raises(SpecError, match="faiss needs a factor model"):
        app.export()


def test_time_split_fit_runs_and_reports_the_baseline(make_rec_spec, ml_slice, tmp_path: Path) -> None:
    from aiforge import App

    spec = BaseSpec.from_dict(make_rec_spec(*ml_slice, model={"algorithm": "item-knn", "compare": ["popularity"],
                                                              "grid": {"K": [10, 50]}}, split={"kind": "time"}))
    result = App(spec, home=tmp_path).fit(progress=False)
    assert set(result.reports) == {"item-knn", "popularity"}
    assert [t.params["K"] for t in result.reports["item-knn"].trials] == [10, 50]
    data = load_interactions(spec.data)  # type: ignore[attr-defined]
    s = split_interactions(data, kind="time", test_fraction=0.2, validation_fraction=0.2, seed=0,
                           min_user_positives=2)
    assert result.reports["item-knn"].test.users == len(np.unique(data.user_idx[s.test]))

"""The recommendation bundle: torch-free runtime, cold start, filters, CLI, and a real HTTP server."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from aiforge.bundle.runtime import Runtime
from aiforge.errors import InputError
from aiforge.tasks.recommend.runtime import RecommendRuntime
from serve_helpers import RunningServer, server_env, serving
from wrong_kind import KindRoute, check_wrong_kind, routes_for_other_kinds


@pytest.fixture(scope="module")
def rt(rec_bundle) -> RecommendRuntime:
    runtime = Runtime.load(rec_bundle.export.path)
    assert isinstance(runtime, RecommendRuntime)
    return runtime


def test_bundle_files_and_parity(rec_bundle) -> None:
    path = rec_bundle.export.path
    for name in ("scorer.onnx", "items.json", "users.json", "pipeline.json", "metrics.json", "card.md",
                 "report.html", "popular.npy", "history_indptr.npy", "history_indices.npy"):
        assert (path / name).is_file(), name
    assert not list(path.glob("*.pkl"))
    assert rec_bundle.export.parity.max_abs_diff < 1e-4
    metrics = json.loads((path / "metrics.json").read_text())
    assert {"hybrid", "popularity", "ease"} <= set(metrics["models"])
    assert metrics["models"]["hybrid"]["test"]["ndcg"] > metrics["models"]["popularity"]["test"]["ndcg"]
    html = (path / "report.html").read_text()
    assert "data:image/png;base64," in html and "long_tail_share" in html
    assert f"baseline: {metrics['baseline']['best']} (best on validation)" in html  # beside the models' table


def test_known_user_matches_training_side_ranking(rec_bundle, rt: RecommendRuntime) -> None:
    from aiforge.tasks.recommend.evaluate import recommend_rows

    fit = rec_bundle.fit
    users = np.arange(0, fit.data.n_users, 9)
    expected = recommend_rows(fit.parts, fit.history, users, 10)
    for u, row in zip(users, expected, strict=True):
        got = rt.recommend(fit.data.users[u], k=10)
        assert got["cold_start"] is None
        assert [r["item"] for r in got["recommendations"]] == [fit.data.items[j] for j in row]
        seen = {fit.data.items[j] for j in fit.history[u].indices}
        assert not seen & {r["item"] for r in got["recommendations"]}


def test_results_carry_metadata_and_seen_items_can_be_included(rec_bundle, rt: RecommendRuntime) -> None:
    user = rt.user_ids[0]
    out = rt.recommend(user, k=5, exclude_seen=False)["recommendations"]
    assert [r["rank"] for r in out] == [1, 2, 3, 4, 5]
    assert all(set(r["metadata"]) == {"title", "genres", "year"} and r["metadata"]["title"] for r in out)
    scores = [r["score"] for r in out]
    assert scores == sorted(scores, reverse=True)


def test_cold_start_paths(rt: RecommendRuntime) -> None:
    nobody = rt.recommend("no-such-user", k=5)
    assert nobody["cold_start"] == "popularity"
    assert [r["item"] for r in nobody["recommendations"]] == [rt.item_ids[j] for j in rt.popular[:5]]
    liked = [rt.item_ids[int(j)] for j in rt.popular[:3]]
    new = rt.recommend(items=liked, k=5)
    assert new["cold_start"] == "items" and not set(liked) & {r["item"] for r in new["recommendations"]}


def test_filters(rt: RecommendRuntime) -> None:
    comedy = rt.recommend(rt.user_ids[1], k=10, filter={"genres": "Comedy"})["recommendations"]
    assert len(comedy) == 10 and all("Comedy" in r["metadata"]["genres"] for r in comedy)
    old = rt.recommend(rt.user_ids[1], k=5, filter={"year": {"max": 1980}, "genres": ["Drama", "War"]})
    assert all(r["metadata"]["year"] <= 1980 for r in old["recommendations"])
    with pytest.raises(InputError, match=r"filter.colour: unknown field; filterable fields are \['genres', 'title'"):
        rt.recommend(rt.user_ids[1], filter={"colour": "red"})
    with pytest.raises(InputError, match=r"filter.year: a range is"):
        rt.recommend(rt.user_ids[1], filter={"year": {"after": 1990}})


def test_bad_queries(rt: RecommendRuntime) -> None:
    with pytest.raises(InputError, match="k: expected an integer from 1 to 100"):
        rt.recommend(rt.user_ids[0], k=0)
    with pytest.raises(InputError, match=r"items\[1\]: unknown item 'nope'"):
        rt.recommend(items=[rt.item_ids[0], "nope"])
    with pytest.raises(InputError, match="give \"user\""):
        rt.recommend()
    similar = rt.similar(rt.item_ids[0], k=5)["similar"]
    assert len(similar) == 5 and rt.item_ids[0] not in {r["item"] for r in similar}


def test_cli_recommend_and_similar(rec_bundle, rt: RecommendRuntime) -> None:
    env = server_env(rec_bundle.home)
    done = subprocess.run([sys.executable, "-m", "aiforge.cli", "recommend", "ml-slice", "--user", rt.user_ids[0],
                           "-k", "3", "--filter", '{"genres": "Drama"}'], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert len(out["recommendations"]) == 3 and all("Drama" in r["metadata"]["genres"] for r in out["recommendations"])
    bad = subprocess.run([sys.executable, "-m", "aiforge.cli", "similar", "ml-slice", "no-such-item"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 1 and "no-such-item" in bad.stderr and "Traceback" not in bad.stderr


@pytest.fixture(scope="module")
def server(rec_bundle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with serving(rec_bundle.export.path, rec_bundle.home, tmp_path_factory.mktemp("rec-log") / "server.log") as s:
        yield s


@pytest.mark.slow
def test_http_routes(server: RunningServer, rt: RecommendRuntime) -> None:
    url = server.url + "/v1/models/ml-slice"
    with httpx.Client(timeout=30) as http:
        user = rt.user_ids[2]
        r = http.post(f"{url}/recommend", json={"user": user, "k": 4, "filter": {"genres": "Action"}})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == "ml-slice" and body["cold_start"] is None
        assert body["recommendations"] == rt.recommend(user, k=4, filter={"genres": "Action"})["recommendations"]
        r = http.post(f"{url}/recommend", json={"user": "stranger"})
        assert r.status_code == 200 and r.json()["cold_start"] == "popularity"
        assert len(r.json()["recommendations"]) == 10
        r = http.post(f"{url}/recommend", json={"items": [rt.item_ids[3]], "k": 2})
        assert r.status_code == 200 and r.json()["cold_start"] == "items"
        r = http.post(f"{url}/similar", json={"item": rt.item_ids[3], "k": 3})
        assert r.status_code == 200 and len(r.json()["similar"]) == 3
        assert r.json()["similar"][0]["metadata"]["title"]
        cases = [
            ("similar", {"item": "nope"}, 404, "item 'nope' is not in this model's catalogue"),
            ("recommend", {"user": user, "k": 1000}, 422, "k: expected an integer from 1 to 100"),
            ("recommend", {"items": ["nope"]}, 422, "items[0]: unknown item 'nope'"),
            ("recommend", {"user": user, "filter": {"colour": 1}}, 422, "filter.colour: unknown field"),
            ("recommend", {"user": user, "extra": 1}, 422, "extra"),
            ("recommend", {}, 422, "give \"user\""),
            ("predict", {"inputs": ["x"]}, 422, "recommendation bundles answer"),
        ]
        for route, payload, status, message in cases:
            r = http.post(f"{url}/{route}", json=payload)
            assert r.status_code == status, (route, payload, r.text)
            assert message in r.json()["error"], r.json()
        r = http.post(server.url + "/v1/models/other/recommend", json={"user": user})
        assert r.status_code == 404
        listing = http.get(server.url + "/v1/models").json()["models"][0]
        assert listing["algorithm"] == "hybrid" and listing["items"] == rt.n_items
    assert "Traceback" not in server.log_tail()


@pytest.mark.slow
@pytest.mark.parametrize("route", routes_for_other_kinds("recommendation"))
def test_other_kinds_routes_refuse_a_recommendation_model_with_the_same_400(server: RunningServer,
                                                                            route: KindRoute) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        check_wrong_kind(http, route, name="ml-slice", served="recommendation")


@pytest.mark.slow
def test_generic_predict_and_infer_refuse_a_recommendation_model_with_a_4xx(server: RunningServer) -> None:
    """v1 /predict and a BYTES v2 infer: 422 naming the routes it answers; a non-BYTES v2 tensor: v2's 400."""
    tensor = {"name": "input", "shape": [1], "datatype": "BYTES", "data": ["x"]}
    answers = "recommendation bundles answer POST /v1/models/ml-slice/recommend and /similar"
    cases = [("/v1/models/ml-slice/predict", {"inputs": ["x"]}, 422, f"inputs: {answers}"),
             ("/v2/models/ml-slice/infer", {"inputs": [tensor]}, 422, f"inputs[0].data: {answers}"),
             ("/v2/models/ml-slice/infer", {"inputs": [{**tensor, "datatype": "FP32", "data": [1.0]}]}, 400,
              "datatype must be BYTES")]
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for path, body, status, message in cases:
            r = http.post(path, json=body)
            assert r.status_code == status, (path, r.text)
            assert message in r.json()["error"], r.json()


def test_a_batch_answers_like_single_queries(rt: RecommendRuntime) -> None:
    queries = [rt.query(user=u, k=7) for u in rt.user_ids[:40]]  # histories of many lengths
    queries += [rt.query(items=rt.item_ids[:2], k=3), rt.query(user="stranger", k=4),
                rt.query(user=rt.user_ids[5], k=5, filter={"genres": "Comedy"})]
    batch = rt.run_batch(queries)
    assert len(batch) == len(queries)
    for q, got in zip(queries, batch, strict=True):
        alone = rt.run_batch([q])[0]
        assert [j for j, _ in got] == [j for j, _ in alone]  # same items; scores to float rounding
        assert np.allclose([s for _, s in got], [s for _, s in alone], atol=1e-5)
        assert len(got) == q.k
    with pytest.raises(NotImplementedError, match="RecommendRuntime does not classify"):
        rt.predict_proba(queries[:1])  # rankings are not probability rows: only run_batch answers


def test_cli_train_prints_the_comparison(make_rec_spec, ml_slice, tmp_path) -> None:
    import yaml

    spec = make_rec_spec(*ml_slice, name="cli-ease", model={"algorithm": "ease", "compare": ["popularity", "als"],
                                                            "grid": {"l2": [50.0, 200.0]}})
    (tmp_path / "aiforge.yaml").write_text(yaml.safe_dump(spec))
    done = subprocess.run([sys.executable, "-m", "aiforge.cli", "train", str(tmp_path / "aiforge.yaml"), "--home",
                           str(tmp_path / "home"), "--no-progress"], capture_output=True, text=True, timeout=300,
                          env=server_env(tmp_path / "home"))
    assert done.returncode == 0, done.stderr[-2000:]
    for text in ("shipped: ease", "popularity", "als", "popularity re-ranking", "ONNX vs numpy",
                 "registered cli-ease:1"):
        assert text in done.stdout, done.stdout

"""``aiforge ship``, ``eval`` and ``audit`` on a recommendation bundle: gates on both sides of the measured values."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from aiforge.audit.checks import audit_bundle, evaluate_bundle
from aiforge.audit.ship import ship
from aiforge.bundle.registry import Registry
from aiforge.cli import app
from aiforge.errors import DataError, SpecError
from ship_helpers import register_with_gates

pytest_plugins = ["recommend_helpers"]


@pytest.fixture(scope="module")
def measured(rec_bundle: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("rec-ship")
    path = register_with_gates(rec_bundle.export.path, home, {"max_size_mb": 10_000.0, "max_p95_latency_ms": 10_000.0})
    report = ship(path, home=home)
    return {"report": report, "ndcg": report.measurements.audit["ndcg"],
            "coverage": report.measurements.audit["coverage"], "size_mb": report.measurements.size_mb}


def test_recommend_ship_measures_the_bundle_on_the_spec_test_split(measured: dict[str, Any], rec_bundle: Any) -> None:
    report = measured["report"]
    assert report.passed and report.stage == "production" and report.task == "recommendation"
    # the same seeded test split training scored, now recommended through the ONNX Runtime as served
    trained = rec_bundle.fit.reports[rec_bundle.fit.algorithm].test
    assert report.measurements.audit["users"] == trained.users
    assert measured["ndcg"] == pytest.approx(trained.ndcg, abs=0.01)
    assert 0 < report.measurements.p95_latency_ms < 1000


@pytest.mark.parametrize("side", ["pass", "fail"])
def test_recommend_gates_on_both_sides_of_the_measured_values(measured: dict[str, Any], rec_bundle: Any, side: str,
                                                              tmp_path: Path) -> None:
    d = 0.01 if side == "pass" else -0.01
    gates = {"min_ndcg_at_k": measured["ndcg"] - d, "min_coverage": measured["coverage"] - d,
             "max_size_mb": measured["size_mb"] * (1.5 if side == "pass" else 0.5),
             "max_p95_latency_ms": 1000.0 if side == "pass" else 1e-4}
    path = register_with_gates(rec_bundle.export.path, tmp_path, gates)
    out = tmp_path / "v.json"
    done = CliRunner().invoke(app, ["ship", str(path), "--home", str(tmp_path), "-o", str(out)])
    verdict = json.loads(out.read_text())
    assert {g["key"]: g["passed"] for g in verdict["gates"]} == dict.fromkeys(gates, side == "pass")
    assert done.exit_code == (0 if side == "pass" else 1), done.output
    assert Registry(tmp_path).get(verdict["name"]).stage == ("production" if side == "pass" else "none")


def test_recommend_refuses_classifier_gates(measured: dict[str, Any], rec_bundle: Any, tmp_path: Path) -> None:
    path = register_with_gates(rec_bundle.export.path, tmp_path, {"max_size_mb": 100.0})
    with pytest.raises(SpecError, match=r"unknown gate 'min_accuracy' for recommendation bundles.*min_ndcg_at_k"):
        ship(path, home=tmp_path, gates={"min_accuracy": 0.5})


def test_recommend_eval_and_audit_on_held_out_interactions(rec_bundle: Any, tmp_path: Path) -> None:
    fit = rec_bundle.fit
    test = fit.split.test
    held = pd.DataFrame({"userId": [fit.data.users[u] for u in fit.data.user_idx[test]],
                         "movieId": [fit.data.items[i] for i in fit.data.item_idx[test]],
                         "rating": 5.0})
    path = tmp_path / "held.csv"
    held.to_csv(path, index=False)
    report = evaluate_bundle(rec_bundle.export.path, path)
    trained = fit.reports[fit.algorithm].test
    assert report.metrics["users"] == trained.users and report.metrics["skipped_users"] == 0
    assert report.metrics["ndcg"] == pytest.approx(trained.ndcg, abs=0.01)
    audit = audit_bundle(rec_bundle.export.path, path, output=tmp_path / "audit")
    segments = audit.metrics["segments"]
    assert len(segments) == 3 and sum(s["users"] for s in segments.values()) == trained.users
    written = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert written["schema"] == "aiforge.audit/2" and {"overall", "settings", "features"} <= set(written)
    assert written["exposure"]["popularity_bucket"]["intervals"]["min_exposure_ratio"][0] >= 0
    # exposure by item group (issue 20): popularity buckets always; an item-level column (here each movie's
    # first genre, a stand-in provider derived from the MovieLens movies file) when named with --sensitive
    buckets = audit.metrics["exposure"]["popularity_bucket"]["groups"]
    assert set(buckets) == {"head", "middle", "tail"}
    assert sum(g["exposure_share"] for g in buckets.values()) == pytest.approx(1.0)
    assert sum(g["positive_share"] for g in buckets.values()) == pytest.approx(1.0)
    for g in buckets.values():
        if g["positive_share"] > 0:
            assert g["exposure_ratio"] == pytest.approx(g["exposure_share"] / g["positive_share"])
    movies = pd.read_csv(rec_bundle.movies)
    genre = dict(zip(movies["movieId"].astype(str), movies["genres"].str.split("|").str[0], strict=True))
    held["genre"] = held["movieId"].astype(str).map(genre)
    assert held["genre"].notna().all()
    held.to_csv(path, index=False)
    by_genre = audit_bundle(rec_bundle.export.path, path, sensitive=["genre"], output=tmp_path / "audit2")
    genres = by_genre.metrics["exposure"]["genre"]["groups"]
    assert sum(g["items"] for g in genres.values()) == len(fit.data.items)
    assert sum(g["exposure_share"] for g in genres.values()) == pytest.approx(1.0)
    assert len(by_genre.metrics["segments"]) == 3  # genre groups items, so users stay in history terciles


def test_recommend_exposure_gates_decided_on_user_bootstrap_intervals(rec_bundle: Any, tmp_path: Path) -> None:
    """Exposure by popularity bucket and by an item column (first genre) is gated per item group, with
    intervals bootstrapped over users: limits beyond the interval pass or fail, a limit inside it is undecided."""
    movies = pd.read_csv(rec_bundle.movies)
    genre = dict(zip(movies["movieId"].astype(str), movies["genres"].str.split("|").str[0], strict=True))
    fit = rec_bundle.fit
    held = pd.DataFrame({"userId": [fit.data.users[u] for u in fit.data.user_idx[fit.split.test]],
                         "movieId": [fit.data.items[i] for i in fit.data.item_idx[fit.split.test]], "rating": 5.0})
    held["genre"] = held["movieId"].astype(str).map(genre)
    data = tmp_path / "held.csv"
    held.to_csv(data, index=False)
    groups = ["popularity_bucket", "genre"]
    loose = {"max_exposure_share_difference": 1.0, "min_exposure_ratio": 0.0, "min_exposure_share": 0.0,
             "item_groups": groups}
    path = register_with_gates(rec_bundle.export.path, tmp_path / "a", loose)
    first = ship(path, home=tmp_path / "a", data=data)
    exposure = first.measurements.audit["exposure"]
    assert set(exposure) == set(groups) and first.passed
    iv = {(r.key, r.feature): r.interval for r in first.results}
    assert len(iv) == 6 and all(v is not None and v[0] <= v[1] for v in iv.values())
    ratio = exposure["popularity_bucket"]
    assert ratio["intervals"]["min_exposure_ratio"][0] <= ratio["min_exposure_ratio"] <= \
        ratio["intervals"]["min_exposure_ratio"][1]
    ratios = [iv[("min_exposure_ratio", g)] for g in groups]
    gaps = [iv[("max_exposure_share_difference", g)] for g in groups]
    lo, hi = ratios[0]
    glo, ghi = gaps[1]
    cases = (("pass", min(r[0] for r in ratios) * 0.9, min(max(g[1] for g in gaps) * 1.1, 1.0)),
             ("fail", max(r[1] for r in ratios) * 1.1 + 1e-3, min(g[0] for g in gaps) * 0.9),
             ("undecided", (lo + hi) / 2, (glo + ghi) / 2))
    for side, ratio_limit, gap_limit in cases:
        home = tmp_path / side
        gates = {"min_exposure_ratio": ratio_limit, "max_exposure_share_difference": gap_limit,
                 "item_groups": groups}
        report = ship(register_with_gates(rec_bundle.export.path, home, gates), home=home, data=data)
        decided = {(r.key, r.feature): r.decision for r in report.results}
        assert decided[("min_exposure_ratio", "popularity_bucket")] == side
        assert decided[("max_exposure_share_difference", "genre")] == side
        if side != "undecided":
            assert set(decided.values()) == {side}
        assert report.passed == (side == "pass")
        assert Registry(home).get(report.name).stage == ("production" if side == "pass" else "none")
    # a column in neither the item table (data.items) nor the --data file is an error naming both
    with pytest.raises(DataError, match=r"gates.item_groups 'provider': not a column of"):
        ship(path, home=tmp_path / "a", data=data, gates={"min_exposure_share": 0.0, "item_groups": ["provider"]})

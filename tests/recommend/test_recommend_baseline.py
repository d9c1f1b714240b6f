"""The recommendation baselines (popularity, item-kNN) beside the session's hybrid recommender, per-user NDCG@k."""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest_plugins = ["recommend_helpers"]


def test_recommender_is_compared_with_popularity_and_item_knn_on_the_same_test_users(rec_bundle: Any) -> None:
    fit = rec_bundle.fit
    b = fit.baseline
    k = fit.reports[fit.algorithm].test.k
    assert b is not None and not b.skipped and b.metric == f"ndcg@{k}"
    assert [c.name for c in b.candidates] == ["popularity", "item-knn"]
    by_name = {c.name: c for c in b.candidates}
    assert b.best == max(by_name, key=lambda n: by_name[n].validation or 0)  # chosen on validation
    # the per-user scores the bootstrap pairs average to the NDCG the model's own evaluation reports
    assert b.model_test == pytest.approx(fit.reports[fit.algorithm].test.ndcg)
    assert by_name["popularity"].test == pytest.approx(fit.reports["popularity"].test.ndcg)
    assert b.n == fit.reports[fit.algorithm].test.users
    low, high = b.interval
    assert low <= b.difference <= high and bool(b.warning) is (low <= 0)
    stored = json.loads((rec_bundle.export.path / "metrics.json").read_text())["baseline"]
    assert stored["metric"] == b.metric and stored["difference"] == pytest.approx(b.difference)

"""The intent head of the session's chat bundle beside TF-IDF nearest neighbour, on the head's own folds."""

from __future__ import annotations

import json

import pytest
from chat_helpers import Acme

pytest_plugins = ["chat_fixtures"]

pytestmark = pytest.mark.usefixtures("chat_env")


def test_chat_intents_are_compared_with_tfidf_nearest_neighbour_out_of_fold(acme: Acme) -> None:
    metrics = json.loads((acme.path / "metrics.json").read_text())
    b = metrics["baseline"]
    assert not b["skipped"] and b["metric"] == "accuracy" and b["n"] == 24  # 3 intents x 8 examples
    assert [c["name"] for c in b["candidates"]] == ["majority class", "TF-IDF nearest neighbour"]
    assert b["best"] == "TF-IDF nearest neighbour"  # beats always-"greet" out of fold
    # the same out-of-fold predictions the threshold was calibrated on
    assert b["model"]["test"] == pytest.approx(metrics["intents"]["out_of_fold_accuracy"])
    low, high = b["interval"]
    assert low <= b["difference"] <= high and (b["warning"] != "") is (low <= 0)
    assert "## Baseline (accuracy)" in (acme.path / "card.md").read_text()

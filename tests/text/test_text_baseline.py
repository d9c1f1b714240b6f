"""The text baselines on real BANKING77: the MiniLM head beats TF-IDF + linear SVM beyond the noise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from banking_helpers import head_spec_dict, read_rows, take, write_rows

from aiforge import App
from aiforge.tasks.text.spec import AppSpec

PER_LABEL_TRAIN, PER_LABEL_TEST = 20, 10


@pytest.fixture(scope="module")
def banking_all_intents(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All 77 BANKING77 intents, 20 training and 10 test texts each (a subsample that keeps the test fast)."""
    train, test = read_rows(shared_data / "train.csv"), read_rows(shared_data / "test.csv")
    labels = sorted({r["category"] for r in train})
    folder = tmp_path_factory.mktemp("banking77-sub")
    write_rows(folder / "train.csv", take(train, labels, PER_LABEL_TRAIN))
    write_rows(folder / "test.csv", take(test, labels, PER_LABEL_TEST))
    return folder


@pytest.mark.slow
def test_banking77_head_beats_its_baselines_and_does_not_warn(banking_all_intents: Path, tmp_path: Path) -> None:
    app = App(AppSpec.from_dict(head_spec_dict(banking_all_intents, name="b77-baseline")), home=tmp_path)
    fit = app.fit(progress=False)
    b = fit.baseline
    assert b is not None and not b.skipped and b.n == 77 * PER_LABEL_TEST
    assert {c.name for c in b.candidates} == {"majority class", "TF-IDF + linear SVM"}
    assert b.best == "TF-IDF + linear SVM"  # chosen on validation over the majority class
    assert b.model_test == pytest.approx(fit.test.accuracy)
    assert b.interval is not None and b.interval[0] > 0 and b.beats and not b.warning and not b.hint
    assert b.interval[0] <= b.difference <= b.interval[1]
    assert json.loads(json.dumps(b.to_dict()))["beats_baseline"] is True
    lines = "\n".join(b.lines())
    assert "WARNING" not in lines and "paired bootstrap CI" in lines

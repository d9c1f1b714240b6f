"""The image baselines on scikit-learn's digits written as an image folder: head mode at 64 px loses to raw pixels."""

from __future__ import annotations

from typing import Any

import pytest

from aiforge import App
from aiforge.spec import BaseSpec
from aiforge.tables import baseline_summary
from aiforge.tasks.image.samples import write_digits_folder

N_TEST = 397  # 1,400 train / 397 test on a seeded, stratified split


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = write_digits_folder(tmp_path_factory.mktemp("digits"), n_test=N_TEST)
    home = tmp_path_factory.mktemp("digits-home")
    spec = BaseSpec.from_dict({
        "name": "digits", "task": "image-classification",
        "data": {"train": str(root / "train"), "test": str(root / "test")},
        "model": {"mode": "head", "resolution": 64}, "train": {"seed": 0},
        "report": {"mistakes": 0, "gradcam": 0}})
    return {"fit": App(spec, home=home).fit(progress=False), "home": home}


@pytest.mark.slow
def test_digits_head_mode_at_64px_loses_to_raw_pixels_and_warns(digits: dict[str, Any]) -> None:
    fit = digits["fit"]
    b = fit.baseline
    assert b is not None and not b.skipped and b.n == N_TEST
    assert len(fit.splits.train) + len(fit.splits.validation) == 1797 - N_TEST
    assert [c.name for c in b.candidates] == ["majority class", "linear (ridge) classifier on 16x16 gray pixels",
                                              "3-nearest neighbours on 16x16 gray pixels"]
    assert b.best != "majority class" and b.model_test == pytest.approx(fit.test.accuracy)
    assert b.interval is not None and b.interval[0] <= 0 and b.beats is False
    assert "does not beat the best baseline" in b.warning and "mode: full" in b.hint
    shown = " ".join(str(r) for r in baseline_summary(b))
    assert "WARNING" in shown and "hint" in shown
    card = b.markdown()  # what the export appends to card.md (bundle/parts.py)
    assert "WARNING: the model does not beat" in card and "(best on validation)" in card

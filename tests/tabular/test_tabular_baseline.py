"""Tabular baselines on real German credit; the ``min_margin_over_baseline`` gate on both sides of the difference."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tabular_helpers import fit_export, german_spec
from typer.testing import CliRunner

from aiforge.audit.ship import ship
from aiforge.cli import app
from aiforge.tables import baseline_summary
from ship_helpers import register_with_gates


def test_german_baseline_is_scored_on_the_same_test_rows_and_reported(german: Any) -> None:
    b = german.result.baseline
    assert b is not None and not b.skipped and german.result.base.kind == "logistic"
    by_name = {c.name: c for c in b.candidates}
    # the model is the logistic candidate, so it is not its own baseline: the majority class is
    assert by_name["logistic regression"].skipped and b.best == "majority class"
    y = german.result.data.test.y
    assert b.n == len(y) and by_name["majority class"].test == pytest.approx(np.bincount(y).max() / len(y))
    assert b.model_test == pytest.approx(german.result.evaluation["none"]["accuracy"])
    low, high = b.interval
    assert low <= b.difference <= high
    assert b.difference == pytest.approx(b.model_test - by_name["majority class"].test)
    # reported in metrics.json, the card, the manifest (registry show) and the train summary
    metrics = json.loads((german.path / "metrics.json").read_text())
    assert metrics["baseline"]["best"] == b.best and metrics["baseline"]["interval"] == [low, high]
    assert "## Baseline (accuracy)" in (german.path / "card.md").read_text()
    shown = CliRunner().invoke(app, ["registry", "show", german.export.record.name, "--home", str(german.home)])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["baseline"]["difference"] == pytest.approx(b.difference)
    assert "paired bootstrap CI" in " ".join(str(r) for r in baseline_summary(b))


@pytest.mark.parametrize("side", ["pass", "below", "undecided"])
def test_margin_gate_on_both_sides_of_the_measured_difference(german: Any, side: str, tmp_path: Path) -> None:
    low, high = german.result.baseline.interval
    margin = {"pass": low - 0.005, "below": high + 0.005, "undecided": (low + high) / 2}[side]
    path = register_with_gates(german.path, tmp_path, {"min_margin_over_baseline": margin})
    report = ship(path, home=tmp_path)
    (result,) = report.results
    assert result.key == "min_margin_over_baseline"
    assert result.measured == pytest.approx(german.result.baseline.difference)
    assert result.interval == pytest.approx([low, high])
    assert result.passed is (side == "pass") and report.passed is (side == "pass")
    assert result.decision == {"pass": "pass", "below": "fail", "undecided": "undecided"}[side]
    assert ("inside the interval" in result.note) is (side == "undecided")
    assert report.stage == ("production" if side == "pass" else "none")


def test_baseline_false_is_skipped_and_the_margin_gate_then_fails(tmp_path: Path) -> None:
    fitted = fit_export({**german_spec("german-nobase"), "baseline": False}, tmp_path)
    b = fitted.result.baseline
    assert b.skipped and b.reason == "baseline: false in the spec" and b.candidates == []
    assert baseline_summary(b) == ["baseline: skipped (baseline: false in the spec)"]
    assert json.loads((fitted.path / "metrics.json").read_text())["baseline"]["skipped"] is True
    assert "Skipped (baseline: false in the spec)" in (fitted.path / "card.md").read_text()
    assert "<h2>Baseline</h2><p>Skipped (baseline: false in the spec).</p>" in (fitted.path / "report.html").read_text()
    path = register_with_gates(fitted.path, tmp_path / "h", {"min_margin_over_baseline": 0.0})
    (result,) = ship(path, home=tmp_path / "h").results
    assert not result.passed and "skipped" in result.note

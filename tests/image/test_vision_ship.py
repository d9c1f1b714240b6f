"""``aiforge ship``, ``eval`` and ``audit`` on an image bundle: gates on both sides of the measured values."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner
from vision_helpers import trained_images

import aiforge as af
from aiforge.audit.checks import audit_bundle
from aiforge.audit.ship import ship
from aiforge.bundle.registry import Registry
from aiforge.cli import app
from aiforge.errors import DataError, SpecError
from ship_helpers import register_with_gates


def above(value: float) -> float:
    """A limit just above a measured score in [0, 1): halfway to 1, at most 0.01 above."""
    assert value < 1.0, "the score is perfect; no min gate can fail on it"
    return min(value + 0.01, (value + 1.0) / 2)


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    trained = trained_images()
    home = tmp_path_factory.mktemp("image-ship")
    path = register_with_gates(trained.export.path, home, {"max_size_mb": 10_000.0, "max_p95_latency_ms": 10_000.0})
    report = ship(path, home=home)
    return {"report": report, "trained": trained, "accuracy": report.measurements.audit["accuracy"],
            "size_mb": report.measurements.size_mb}


def test_image_ship_measures_the_bundle_on_the_spec_test_split(measured: dict[str, Any]) -> None:
    report, trained = measured["report"], measured["trained"]
    assert report.passed and report.stage == "production" and report.task == "image-classification"
    # the spec's test folder through the torch-free Runtime (as served): what aiforge.evaluate measures
    expected = af.evaluate(trained.export.path, trained.data / "test")
    assert measured["accuracy"] == pytest.approx(expected.accuracy) and report.measurements.audit["n"] == 24
    assert 0 < report.measurements.p95_latency_ms < 1000 and 0.1 < measured["size_mb"] < 200


@pytest.mark.parametrize("side", ["pass", "fail"])
def test_image_gates_on_both_sides_of_the_measured_values(measured: dict[str, Any], side: str,
                                                          tmp_path: Path) -> None:
    acc = measured["accuracy"]
    gates = {"min_accuracy": acc - 0.01 if side == "pass" else above(acc),
             "max_size_mb": measured["size_mb"] * (1.5 if side == "pass" else 0.5)}
    # limits 0.01 from the point estimate of 24 images sit inside the interval: decided on the point
    path = register_with_gates(measured["trained"].export.path, tmp_path, {**gates, "decide": "point"})
    report = ship(path, home=tmp_path)
    assert {r.key: r.passed for r in report.results} == dict.fromkeys(gates, side == "pass")
    assert report.results[0].measured == pytest.approx(acc)
    assert Registry(tmp_path).get(report.name).stage == ("production" if side == "pass" else "none")


def test_image_refuses_gates_of_other_kinds(measured: dict[str, Any], tmp_path: Path) -> None:
    path = register_with_gates(measured["trained"].export.path, tmp_path, {"max_size_mb": 100.0})
    with pytest.raises(SpecError, match="unknown gate 'min_roc_auc' for image-classification bundles"):
        ship(path, home=tmp_path, gates={"min_roc_auc": 0.5})


def test_image_eval_and_audit(measured: dict[str, Any], tmp_path: Path) -> None:
    trained = measured["trained"]
    out = tmp_path / "m.json"
    done = CliRunner().invoke(app, ["eval", str(trained.export.path), "--data", str(trained.data / "test"),
                                    "-o", str(out)])
    assert done.exit_code == 0, done.output
    assert json.loads(out.read_text())["accuracy"] == pytest.approx(measured["accuracy"])
    rows = [{"path": str(p), "label": p.parent.name, "camera": "phone" if i % 2 else "scanner"}
            for i, p in enumerate(sorted((trained.data / "test").rglob("*.png")))]
    data = tmp_path / "test.csv"
    with data.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "label", "camera"])
        writer.writeheader()
        writer.writerows(rows)
    report = audit_bundle(trained.export.path, data, sensitive=["camera"], output=tmp_path / "audit")
    groups = report.metrics["features"]["camera"]["groups"]  # the shared audit.json schema (issue 20)
    written = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert written["schema"] == "aiforge.audit/2" and {"overall", "settings", "features"} <= set(written)
    assert {g: r["count"] for g, r in groups.items()} == {"phone": 12, "scanner": 12}
    # 24 images: both groups are under the 30-row minimum, so the gap is not judged, and the audit says so
    assert "fewer than two groups" in report.metrics["features"]["camera"]["note"]
    overall = sum(r["accuracy"] * r["count"] for r in groups.values()) / 24
    assert overall == pytest.approx(measured["accuracy"])
    with pytest.raises(DataError, match="need a CSV with path, label and those columns"):
        audit_bundle(trained.export.path, trained.data / "test", sensitive=["camera"], output=tmp_path / "a2")
    # a group gate on those 12-image groups is undecided, and so ship refuses, whatever the gap
    home = tmp_path / "home"
    path = register_with_gates(trained.export.path, home, {"max_accuracy_difference": 1.0,
                                                           "sensitive_features": ["camera"]})
    verdict = ship(path, data=data, home=home)
    (gate,) = verdict.results
    assert gate.decision == "undecided" and not verdict.passed and "(12 rows) below min_group_size 30" in gate.note
    assert verdict.rows_per_group() == {"camera": {"phone": 12, "scanner": 12}}
    assert Registry(home).get(verdict.name).stage == "none"

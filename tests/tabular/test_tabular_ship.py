"""``aiforge ship``: gates set on both sides of measured values pass and fail for the right reasons."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tabular_helpers import fit_export, german_spec

from aiforge.audit.ship import ship
from aiforge.bundle.registry import Registry
from aiforge.errors import RegistryError
from serve_helpers import server_env


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Measure the German model once (no gates binding), to set gates around the numbers."""
    home = tmp_path_factory.mktemp("ship-measure")
    fitted = fit_export(german_spec("german-ship", gates={"max_size_mb": 100.0, "max_p95_latency_ms": 10_000.0}),
                        home)
    report = ship(fitted.path, home=home)
    feat = report.measurements.audit["features"]["age_group"]
    yield {"accuracy": report.measurements.audit["overall"]["accuracy"],
           "dp": feat["demographic_parity_difference"], "eo": feat["equalized_odds_difference"],
           "size_mb": report.measurements.size_mb, "p95": report.measurements.p95_latency_ms,
           "report": report, "home": home}


def _write_spec(folder: Path, name: str, gates: dict[str, Any]) -> Path:
    path = folder / name / "aiforge.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(german_spec(name, gates=gates)), encoding="utf-8")
    return path


def test_first_ship_promotes_and_measures(measured: dict[str, Any]) -> None:
    report = measured["report"]
    assert report.passed and report.stage == "production"
    assert {r.key for r in report.results} == {"max_size_mb", "max_p95_latency_ms"}
    assert 0 < measured["size_mb"] < 5 and 0 < measured["p95"] < 1000
    assert Registry(measured["home"]).get("german-ship").stage == "production"


@pytest.mark.parametrize("side", ["pass", "fail"])
def test_gates_on_both_sides_of_the_measured_values(measured: dict[str, Any], side: str, tmp_path: Path) -> None:
    d = 0.01 if side == "pass" else -0.01
    gates = {"min_accuracy": measured["accuracy"] - d, "max_demographic_parity_difference": measured["dp"] + d,
             "max_equalized_odds_difference": measured["eo"] + d,
             "max_size_mb": measured["size_mb"] * (1.5 if side == "pass" else 0.5),
             "max_p95_latency_ms": 1000.0 if side == "pass" else 1e-4,
             "sensitive_features": ["age_group"],
             "decide": "point"}  # limits 0.01 from the point: the interval rule is tested in test_tabular_gates
    spec = _write_spec(tmp_path, f"german-{side}", gates)
    home = tmp_path / "home"
    proc = subprocess.run([sys.executable, "-m", "aiforge.cli", "ship", str(spec), "-o", str(tmp_path / "v.json")],
                          capture_output=True, text=True, timeout=300, env=server_env(home))
    import json

    verdict = json.loads((tmp_path / "v.json").read_text())
    results = {g["key"]: g for g in verdict["gates"]}
    assert set(results) == {"min_accuracy", "max_demographic_parity_difference", "max_equalized_odds_difference",
                            "max_size_mb", "max_p95_latency_ms"}
    # the same model (fixed seed) measures the same accuracy and gaps as in the measuring run
    assert abs(results["min_accuracy"]["measured"] - measured["accuracy"]) < 1e-9
    assert abs(results["max_demographic_parity_difference"]["measured"] - measured["dp"]) < 1e-9
    stage = Registry(home).get(f"german-{side}").stage
    if side == "pass":
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert all(g["passed"] for g in verdict["gates"]) and stage == "production"
        assert "all gates pass" in proc.stdout
    else:
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert not any(g["passed"] for g in verdict["gates"]), verdict
        assert stage == "none"
        assert "not shipped: 5 gate(s) failed" in proc.stderr
        assert "FAIL" in proc.stdout


def test_four_fifths_gate_flags_the_group(tmp_path: Path) -> None:
    fitted = fit_export(german_spec("german-45", gates={"four_fifths": True, "sensitive_features": ["age_group"]}),
                        tmp_path)
    report = ship(fitted.path, home=tmp_path)
    groups = report.measurements.audit["features"]["age_group"]["groups"]
    rates = {g: r["selection_rate"] for g, r in groups.items()}
    ratio = rates["under 25"] / rates["25 or over"]  # "25 or over" is the larger, reference group
    (gate,) = report.results
    assert gate.key == "four_fifths"
    assert abs(gate.measured - min(ratio, 1 / ratio)) < 1e-9
    # decided by the bootstrap interval of the ratio (upper_bound rule, issue 20): >= 0.8 over all of it passes
    lo, hi = gate.interval
    assert lo <= gate.measured <= hi
    expected = "pass" if lo >= 0.8 else "fail" if hi < 0.8 else "undecided"
    assert gate.decision == expected and gate.passed == (expected == "pass")
    assert report.stage == ("production" if gate.passed else "none")
    if gate.decision == "fail":
        assert "under 25" in gate.note


def test_set_stage_archives_the_previous_production_version(measured: dict[str, Any]) -> None:
    reg = Registry(measured["home"])
    reg.set_stage("german-ship", 1, "production")
    second = fit_export(german_spec("german-ship"), measured["home"])
    reg.set_stage("german-ship", second.export.record.version, "production")
    assert [r.stage for r in reg.versions("german-ship")] == ["archived", "production"]
    with pytest.raises(RegistryError, match="unknown stage 'live'"):
        reg.set_stage("german-ship", 1, "live")


def test_ship_without_gates_is_an_error(tmp_path: Path) -> None:
    from aiforge.errors import AiforgeError

    fitted = fit_export(german_spec("german-nogates"), tmp_path)
    with pytest.raises(AiforgeError, match="sets no gates"):
        ship(fitted.path, home=tmp_path)

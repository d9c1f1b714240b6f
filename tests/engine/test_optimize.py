"""``aiforge optimize``: a real sweep of the session's small text bundle, the version it registers, the gate.

The bundle is copied into a fresh registry (the session fixture stays read-only). One CLI run with a
small budget measures the fp32 graph and at least one other recipe, writes the Pareto table into the
new version's folder and registers it with the chosen serving settings; that version verifies, loads
with those settings and serves over HTTP. A second sweep, on out-of-distribution texts (intents the
bundle never saw, where top-1 margins are small and int8 flips some of them) with the gate raised to
1.0, shows rows below the gate kept in the table and never chosen.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from aiforge.bundle.format import BundleManifest, read_manifest
from aiforge.bundle.registry import Registry
from aiforge.bundle.registry import verify as verify_bundle
from aiforge.bundle.runtime import Runtime
from aiforge.errors import AiforgeError
from aiforge.optimize.command import _hooks, optimize_bundle
from aiforge.optimize.sweep import SweepGrid
from aiforge.serve.app import create_app
from aiforge.serve.config import server_config


def _copy_into(home: Path, bundle: Path) -> str:
    manifest = read_manifest(bundle)
    registry = Registry(home)
    with registry.staging() as staged:
        for item in bundle.iterdir():
            if item.name != "manifest.json":
                shutil.copy2(item, staged / item.name)
        registry.add(staged, name=manifest.name, task=manifest.task, extra=manifest.extra)
    return manifest.name


@pytest.fixture(scope="module")
def swept(trained_bundle: Any,
          tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, subprocess.CompletedProcess[str]]:
    home = tmp_path_factory.mktemp("optimize-home")
    name = _copy_into(home, Path(trained_bundle.export.path))
    env = {"AIFORGE_HOME": str(home), "HF_HUB_OFFLINE": "1", "COLUMNS": "200", "PATH": "/usr/bin:/bin",
           "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    done = subprocess.run([sys.executable, "-m", "aiforge.cli", "optimize", name, "--budget", "60s", "--levels", "all",
                           "--threads", "1", "--batch-sizes", "16", "--waits", "2", "--timing-items", "32"],
                          capture_output=True, text=True, env=env, timeout=300)
    return home, name, done


def test_optimize_writes_a_pareto_table_and_registers_a_version(swept: Any) -> None:
    home, name, done = swept
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"registered {name}:2" in done.stdout
    folder = Registry(home).resolve(name, "2")
    table = json.loads((folder / "pareto.json").read_text(encoding="utf-8"))
    rows = table["rows"]
    with (folder / "pareto.csv").open(encoding="utf-8") as fh:
        assert len(list(csv.DictReader(fh))) == len(rows)
    recipes = {r["recipe"] for r in rows}
    assert "fp32" in recipes and len(recipes) >= 2, recipes  # the fp32 graph and at least one other
    assert table["min_agreement"] == 0.99 and table["budget_s"] == 60
    fp32 = [r for r in rows if r["recipe"] == "fp32"]
    assert all(r["agreement_with_fp32"] == 1.0 for r in fp32)
    assert all(r["offline_items_per_s"] > 0 and r["size_mb"] > 1 and r["rss_mb"] >= 0 for r in rows)
    chosen = [r for r in rows if r["chosen"]]
    assert len(chosen) == 1 and chosen[0]["gate"] == "pass" and chosen[0]["agreement_with_fp32"] >= 0.99
    served = [r for r in rows if r["hi_items_per_s"] is not None]
    for r in served:
        assert r["lo_p50_ms"] <= r["lo_p99_ms"] and r["hi_p50_ms"] <= r["hi_p99_ms"]
    assert any(r["pareto"] for r in served) or not served

    # the new version: verified, its settings recorded where the server and the runtime read them
    check = verify_bundle(name, version="2", home=home)  # raises naming the file on any mismatch
    assert check.summary().startswith("OK") and check.files == len(read_manifest(folder).files)
    assert {"pareto.json", "pareto.csv"} <= set(read_manifest(folder).files)
    serve = read_manifest(folder).extra["spec"]["serve"]
    best = chosen[0]
    assert serve["precision"] == best["precision"]
    assert serve["intra_op_threads"] == best["intra_op_threads"]
    assert serve["graph_optimization_level"] == best["graph_optimization_level"]
    config = server_config([f"{name}:2"], home=home)
    assert config.threads == best["intra_op_threads"]
    if best["max_batch_size"] is not None:
        assert (config.max_batch_size, config.max_wait_ms) == (best["max_batch_size"], best["max_wait_ms"])
    rt = Runtime.load(name, version="2", home=home)
    assert rt.session.get_session_options().intra_op_num_threads == best["intra_op_threads"]
    assert rt.predict(["where is my card?"])[0].label in rt.labels


def test_the_new_version_serves(swept: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    home, name, done = swept
    assert done.returncode == 0, done.stderr[-3000:]
    monkeypatch.setenv("AIFORGE_HOME", str(home))
    with TestClient(create_app([f"{name}:2"])) as client:
        deadline = time.monotonic() + 60
        while client.get("/v2/health/ready").status_code != 200:
            assert time.monotonic() < deadline, "server not ready within 60 s"
            time.sleep(0.1)
        fp32 = Runtime.load(name, version="1", home=home, precision="fp32")
        texts = ["where is my card?", "I want to top up with Apple Pay"]
        answer = client.post(f"/v1/models/{name}/predict", json={"inputs": texts})
        assert answer.status_code == 200, answer.text
        got = [p["label"] for p in answer.json()["predictions"]]
        assert got == [p.label for p in fp32.predict(texts)]


def test_rows_below_the_gate_are_kept_and_never_chosen(swept: Any, shared_data: Path, tmp_path: Path) -> None:
    home, name, _ = swept
    with (shared_data / "test.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    known = set(Runtime.load(name, version="1", home=home).labels)
    unseen = [r for r in rows if r["category"] not in known][::7][:120]
    data = tmp_path / "ood.csv"
    with data.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["text", "category"])
        writer.writeheader()
        writer.writerows(unseen)
    grid = SweepGrid(levels=("all",), threads=(1,), batch_sizes=(16,), waits_ms=(2.0,), timing_items=32)
    result = optimize_bundle(name, version="1", budget_s=60, home=home, data=data, min_agreement=1.0, grid=grid,
                             register=False, progress=False, out=tmp_path / "table")
    assert result.min_agreement == 1.0
    below = [r for r in result.rows if r["agreement_with_fp32"] < 1.0]
    assert below, [(r["recipe"], r["agreement_with_fp32"]) for r in result.rows]
    assert all(r["gate"] == "below gate" and not r.get("chosen") for r in below)
    assert result.chosen is not None and result.chosen["agreement_with_fp32"] == 1.0
    assert result.table_json.is_file() and result.version is None
    # a lower --min-agreement never lowers the bundle's own gate
    low = optimize_bundle(name, version="1", budget_s=1, home=home, min_agreement=0.5,
                          grid=SweepGrid(levels=("all",), threads=(1,), batch_sizes=(), waits_ms=(), timing_items=8),
                          register=False, progress=False, out=tmp_path / "low")
    assert low.min_agreement == 0.99


def test_kinds_without_hooks_are_refused_with_a_message() -> None:
    manifest = BundleManifest(format_version=2, task="tabular-classification", name="t", version="1",
                              created="", files={}, extra={})
    with pytest.raises(AiforgeError, match="works for image-classification, text-classification"):
        _hooks(manifest)

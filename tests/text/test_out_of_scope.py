"""``model.out_of_scope`` for text classification: two BANKING77 intents held out as the user's out-of-scope
examples; the served label and flag over v1 and v2, in-scope accuracy and out-of-scope recall in metrics and card."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from aiforge import App
from aiforge.app import load
from aiforge.bundle.runtime import Runtime
from aiforge.tasks.text.spec import AppSpec
from serve_helpers import serving, v2_body

HELD_OUT = 2


def _relabel(src: Path, dst: Path, unknown: set[str]) -> list[str]:
    with src.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    oos = []
    for r in rows:
        if r["category"] in unknown:
            r["category"] = "oos"
            oos.append(r["text"])
    with dst.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return oos


@pytest.fixture(scope="module")
def oos_bundle(small_banking: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    with (small_banking / "train.csv").open(newline="", encoding="utf-8") as fh:
        labels = sorted({r["category"] for r in csv.DictReader(fh)})
    unknown = set(labels[-HELD_OUT:])
    folder = tmp_path_factory.mktemp("oos-data")
    _relabel(small_banking / "train.csv", folder / "train.csv", unknown)
    test_oos = _relabel(small_banking / "test.csv", folder / "test.csv", unknown)
    home = tmp_path_factory.mktemp("oos-home")
    raw = {"name": "bank-oos", "task": "text-classification",
           "data": {"train": str(folder / "train.csv"), "test": str(folder / "test.csv"), "label_column": "category",
                    "validation_fraction": 0.25},
           "model": {"out_of_scope": {"label": "oos", "target_in_scope_recall": 0.9}},
           "train": {"epochs": 20}, "optimize": {"quantize": False, "parity_samples": 64}}
    app = App(AppSpec.from_dict(raw), home=home)
    app.fit(progress=False)
    return Path(app.export().path), home, test_oos


def test_metrics_and_card_report_in_scope_accuracy_and_out_of_scope_recall(
        oos_bundle: tuple[Path, Path, list[str]]) -> None:
    path, _, _ = oos_bundle
    metrics = json.loads((path / "metrics.json").read_text(encoding="utf-8"))["out_of_scope"]
    test = metrics["test"]
    assert test["out_of_scope"] > 0 and test["in_scope"] > 0
    assert test["out_of_scope_recall"] >= 0.5, metrics
    assert test["in_scope_accuracy"] >= 0.6, metrics
    assert test["in_scope_accuracy"] <= test["in_scope_accuracy_without_rejection"]
    assert metrics["calibration"]["held_out_out_of_scope"] > 0  # the user's examples calibrated it
    assert len(metrics["calibration"]["curve"]) >= 10
    card = (path / "card.md").read_text(encoding="utf-8")
    assert "## Out of scope" in card and "out-of-scope recall" in card


def test_out_of_scope_is_a_label_with_a_flag_in_every_protocol(oos_bundle: tuple[Path, Path, list[str]],
                                                              tmp_path: Path) -> None:
    path, home, oos_texts = oos_bundle
    rt = load(path)
    assert rt.labels[-1] == "out_of_scope" and "oos" not in rt.labels
    preds = rt.predict(oos_texts)
    rejected = [p.label == "out_of_scope" for p in preds]
    assert sum(rejected) >= len(rejected) // 2
    text = oos_texts[rejected.index(True)]
    with serving(path, home, tmp_path / "server.log") as server, httpx.Client(base_url=server.url) as http:
        v1 = http.post(f"/v1/models/{rt.name}/predict", json={"inputs": [text, "I want to top up my card"]})
        assert v1.status_code == 200, v1.text
        first = v1.json()["predictions"][0]
        assert (first["label"], first["out_of_scope"]) == ("out_of_scope", True)
        v2 = http.post(f"/v2/models/{rt.name}/infer", json=v2_body([text]))
        assert v2.status_code == 200, v2.text
        outputs = {o["name"]: o for o in v2.json()["outputs"]}
        assert outputs["out_of_scope"] == {"name": "out_of_scope", "datatype": "BOOL", "shape": [1], "data": [True]}
        assert outputs["label"]["data"] == ["out_of_scope"]


def test_out_of_scope_rows_are_the_same_when_a_large_input_runs_as_concurrent_batches(
        oos_bundle: tuple[Path, Path, list[str]], shared_data: Path) -> None:
    """The offline runtime (concurrent batches on a 1-thread session) gives the sequential path's rows, rejections
    included, on 1,027 real BANKING77 test texts."""
    path, _, _ = oos_bundle
    with (shared_data / "test.csv").open(newline="", encoding="utf-8") as fh:
        texts = [r["text"] for r in csv.DictReader(fh)][::3]
    concurrent, sequential = Runtime.load(path, threads=2), Runtime.load(path, threads=2)
    sequential.offline_min_batches = 1 << 30
    got, want = concurrent.predict_proba(texts), sequential.predict_proba(texts)
    assert float(np.abs(got - want).max()) <= 1e-6
    assert 0 < int(got[:, -1].sum()) < len(texts)  # some rejected, some not

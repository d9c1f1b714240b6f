"""Serving tabular bundles: records in, label and probability out, over real HTTP (`german` and `records` are
session fixtures of tests/conftest.py; the torch-free check is in tests/engine/test_kinds_contract.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from tabular_helpers import Fitted

import aiforge
from aiforge.bundle.runtime import ItemLimits
from aiforge.errors import InputError
from serve_helpers import RunningServer, serving


@pytest.fixture(scope="module")
def server(german: Fitted, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    log = tmp_path_factory.mktemp("tab-server") / "server.log"
    with serving(german.path, german.home, log) as running:
        yield running


def test_runtime_matches_scikit_learn_on_records(german: Fitted, records: list[dict]) -> None:
    from aiforge.tasks.tabular.task import model_frame

    res = german.result
    rt = aiforge.load(german.path)
    expected = res.base.pipeline.predict_proba(model_frame(res.data.test, res.schema, res.data.sensitive_features))
    got = rt.predict_proba(records)
    assert np.abs(got - expected[: len(records)]).max() < 1e-5
    preds = rt.predict(records)
    assert {p.label for p in preds} <= {"bad", "good"}
    assert rt.labels == ["bad", "good"]


def test_parse_items_names_missing_and_ill_typed_fields(german: Fitted, records: list[dict]) -> None:
    rt = aiforge.load(german.path)
    lim = ItemLimits()
    good = dict(records[0])
    rt.parse_items([good, {**good, "credit_amount": None, "purpose": None, "label": "x"}], "inputs", lim)
    cases = [
        ({k: v for k, v in good.items() if k != "duration"}, r"inputs\[0\]: missing field 'duration' \(a number"),
        ({**good, "duration": "six"}, r"inputs\[0\]\.duration: expected a number or null, got str"),
        ({**good, "duration": True}, r"inputs\[0\]\.duration: expected a number or null, got bool"),
        ({**good, "purpose": [1]}, r"inputs\[0\]\.purpose: expected a string or null, got list"),
        ("not a record", r"inputs\[0\]: expected a JSON object"),
    ]
    for item, pattern in cases:
        with pytest.raises(InputError, match=pattern):
            rt.parse_items([item], "inputs", lim)
    # derived feature (credit_amount / duration) is computed from the raw fields, never sent
    assert "amount_per_month" not in {c.name for c in rt.schema.columns}
    assert "amount_per_month" in rt.schema.graph_inputs


def test_v1_and_v2_over_http(server: RunningServer, german: Fitted, records: list[dict]) -> None:
    rt = aiforge.load(german.path)
    expected = rt.predict_proba(records[:4])
    with httpx.Client(base_url=server.url, timeout=60) as http:
        r = http.post("/v1/models/german-serve/predict", json={"inputs": records[:4]})
        assert r.status_code == 200, r.text
        preds = r.json()["predictions"]
        assert [p["label"] for p in preds] == [rt.labels[i] for i in expected.argmax(axis=1)]
        assert abs(preds[0]["scores"]["good"] - expected[0, 1]) < 1e-6

        cols = [c for c in rt.schema.columns]
        tensors = [{"name": c.name, "shape": [4, 1], "datatype": "FP32" if c.kind == "numeric" else "BYTES",
                    "data": [rec[c.name] for rec in records[:4]]} for c in cols]
        r = http.post("/v2/models/german-serve/infer", json={"inputs": tensors})
        assert r.status_code == 200, r.text
        probs = next(o for o in r.json()["outputs"] if o["name"] == "probabilities")
        assert np.allclose(np.array(probs["data"]).reshape(4, 2), expected, atol=1e-6)

        r = http.post("/v2/models/german-serve/infer", json={"inputs": [
            {"name": "records", "shape": [2], "datatype": "BYTES", "data": [json.dumps(x) for x in records[:2]]}]})
        assert r.status_code == 200, r.text

        bad = {k: v for k, v in records[0].items() if k != "savings"}
        r = http.post("/v1/models/german-serve/predict", json={"inputs": [records[1], bad]})
        assert r.status_code == 422 and "inputs[1]: missing field 'savings'" in r.json()["error"]
        r = http.post("/v2/models/german-serve/infer", json={"inputs": [*tensors[:3], {**tensors[3], "shape": [3]}]})
        assert r.status_code == 400 and "shape" in r.json()["error"]
        r = http.post("/v2/models/german-serve/infer", json={"inputs": [{**tensors[0], "name": "salary"}]})
        assert r.status_code == 400 and "unknown input tensor(s) ['salary']" in r.json()["error"]

        meta = http.get("/v2/models/german-serve").json()
        names = [i["name"] for i in meta["inputs"]]
        assert names[-1] == "records" and "duration" in names and "age_group" not in names
        listing = http.get("/v1/models").json()["models"][0]
        assert listing["task"] == "tabular-classification" and listing["sensitive_at_prediction"] == []
        assert "decision support" in listing["card"]


def test_predict_and_eval_files_from_the_cli(german: Fitted, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from aiforge.cli import app

    test_csv = tmp_path / "test.csv"
    german.result.data.test.frame.to_csv(test_csv, index=False)
    env = {"AIFORGE_HOME": str(german.home)}
    out = CliRunner().invoke(app, ["eval", "german-serve", "--data", str(test_csv)], env=env)
    assert out.exit_code == 0, out.output
    metrics = aiforge.evaluate(german.path, test_csv)
    assert metrics.n == len(german.result.data.test) and abs(metrics.accuracy
                                                             - german.result.evaluation["none"]["accuracy"]) < 1e-9
    rows = aiforge.predict_file(german.path, test_csv)
    assert len(rows) == metrics.n and {"row", "label", "score", "scores"} <= set(rows[0])


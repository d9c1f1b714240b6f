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


def _raw_post(server: RunningServer, path: str, body: str) -> httpx.Response:
    """POST ``body`` as it is (json= cannot send a lone surrogate or a malformed nesting)."""
    return httpx.post(server.url + path, content=body.encode(), headers={"content-type": "application/json"},
                      timeout=60)


def test_parse_errors_and_bad_text_in_records_are_4xx_json_never_500(server: RunningServer,
                                                                    records: list[dict]) -> None:
    # Issue 16, items 2 and 8: a v2 'records' string nested 10,000 deep (RecursionError) or holding a
    # 5,000-digit integer, and a lone surrogate in a category (it failed inside onnxruntime), were 500s.
    v2, v1 = "/v2/models/german-serve/infer", "/v1/models/german-serve/predict"

    def records_tensor(*data: str) -> str:
        return json.dumps({"inputs": [{"name": "records", "shape": [len(data)], "datatype": "BYTES",
                                       "data": list(data)}]})

    deep = "[" * 10_000 + "]" * 10_000
    cases = [
        (v2, records_tensor(json.dumps(records[0]), deep), 400, "inputs[0].data[1]: JSON nested too deeply"),
        (v2, records_tensor('{"duration": ' + "9" * 5000 + "}"), 400,
         "inputs[0].data[0]: JSON value refused (Exceeds the limit (4300 digits)"),
        (v2, records_tensor('{"purpose": ' + "[" * 500 + "]" * 500 + "}"), 400,
         "inputs[0].data[0]: nested more than 32 levels deep"),
        (v2, records_tensor("[1, 2]"), 400, "inputs[0].data[0]: expected a JSON object (one record), got list"),
        (v2, records_tensor(json.dumps({**records[0], "purpose": "\ud800"})), 422,
         "inputs[0].data[0].purpose: not valid Unicode text: lone surrogate U+D800"),
        (v1, json.dumps({"inputs": [records[1], {**records[0], "housing": "\ud800"}]}), 422,
         "inputs[1].housing: not valid Unicode text: lone surrogate U+D800"),
        (v1, '{"inputs": [' + deep + "]}", 400, "request body is not valid JSON: nested too deeply"),
        (v1, '{"inputs": [{"duration": ' + "9" * 5000 + "}]}", 400,
         "request body is not valid JSON: Exceeds the limit (4300 digits)"),
    ]
    for path, body, status, message in cases:
        r = _raw_post(server, path, body)
        assert r.status_code == status, (message, r.status_code, r.text[:300])
        assert r.headers["content-type"].startswith("application/json")
        assert message in r.json()["error"], r.json()
    assert "Traceback" not in server.log_tail(100_000)


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


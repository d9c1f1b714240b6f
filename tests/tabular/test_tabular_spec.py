"""Tabular spec and data checks, the example specs, and the gate table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tabular_helpers import adult_spec, fit_export

from aiforge.audit.fairness import AuditSettings, audit_predictions
from aiforge.audit.gates import GATES, Measurements, evaluate_gates, gate_keys
from aiforge.errors import DataError, SpecError
from aiforge.spec import BaseSpec, load_spec
from aiforge.tasks.tabular.checks import TABULAR_GATES
from aiforge.tasks.tabular.spec import GateSpec, TabularSpec

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = ["adult-income", "compas-recidivism", "german-credit"]


def _csv(folder: Path, rows: int = 80, **overrides: object) -> Path:
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"age": rng.integers(18, 70, rows), "job": rng.choice(["a", "b", "c"], rows),
                       "sex": rng.choice(["f", "m"], rows), "hired": rng.choice(["no", "yes"], rows)})
    for k, v in overrides.items():
        df[k] = v
    path = folder / "data.csv"
    df.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("example", EXAMPLES)
def test_example_specs_validate(example: str) -> None:
    spec = load_spec(REPO / "examples" / example / "aiforge.yaml")
    assert isinstance(spec, TabularSpec) and spec.name == example
    assert spec.data.sample is not None
    assert any(v not in (None, False) for k, v in spec.gates.model_dump().items() if k != "sensitive_features")


@pytest.mark.slow
def test_adult_example_runs_on_a_small_slice(tmp_path: Path) -> None:
    raw = load_spec(REPO / "examples" / "adult-income" / "aiforge.yaml").model_dump(mode="json")
    raw["data"]["max_rows"] = 3000
    raw["audit"]["mitigation"]["compare"] = []
    raw["audit"]["bootstrap"] = 20
    fitted = fit_export(raw, tmp_path)
    # the example lists candidates; the rule picks among them (issue 20) and the card says why
    choice = fitted.result.choice
    assert fitted.result.shipped.method == choice.chosen
    assert choice.chosen in ("none", "threshold_optimizer", "reweighing")
    assert choice.reason in (fitted.path / "card.md").read_text()
    assert (fitted.path / "report.html").is_file()
    assert fitted.export.record.metrics["accuracy"] > 0.75


def test_spec_errors_name_the_key() -> None:
    base = adult_spec()
    with pytest.raises(SpecError, match=r"unknown key 'audit.mitigation.methd'.*Did you mean 'method'"):
        BaseSpec.from_dict({**base, "audit": {"mitigation": {"methd": "reweighing"}}})
    with pytest.raises(SpecError, match=r"either data\.sample"):
        BaseSpec.from_dict({**base, "data": {"sample": "adult", "train": "x.csv", "label": "y"}})
    with pytest.raises(SpecError, match="tolerance"):
        BaseSpec.from_dict({**base, "audit": {"mitigation": {"method": "threshold_optimizer",
                                                              "constraint": "equalized_odds", "tolerance": 0.02}}})
    with pytest.raises(SpecError, match=r"audit.mitigation.method: Input should be"):
        BaseSpec.from_dict({**base, "audit": {"mitigation": {"method": "grid_search"}}})
    with pytest.raises(SpecError, match="Did you mean 'tabular-classification'"):
        BaseSpec.from_dict({**base, "task": "tabular-clasification"})


def test_data_errors_name_file_column_and_fix(tmp_path: Path) -> None:
    from aiforge.tasks.tabular.data import load_tabular

    path = _csv(tmp_path)

    def spec(**data: object) -> TabularSpec:
        raw = {"name": "t", "task": "tabular-classification",
               "data": {"train": str(path), "label": "hired", "sensitive_features": ["sex"], **data}}
        out = BaseSpec.from_dict(raw)
        assert isinstance(out, TabularSpec)
        return out

    with pytest.raises(DataError, match=r"label column \['salary'\] not found"):
        load_tabular(spec(label="salary"))
    with pytest.raises(DataError, match=r"sensitive feature column\(s\) \['race'\] not found"):
        load_tabular(spec(sensitive_features=["race"]))
    _csv(tmp_path, hired=["n", "y"] * 40)
    with pytest.raises(DataError, match=r"set data.positive_label to one of \['n', 'y'\]"):
        load_tabular(spec())
    _csv(tmp_path, hired=["a", "b", "c", "d"] * 20)
    with pytest.raises(DataError, match="exactly two labels"):
        load_tabular(spec(positive_label="a"))
    ages = ["30"] * 79 + ["thirty"]
    _csv(tmp_path, age=ages)
    raw = {"name": "t", "task": "tabular-classification",
           "data": {"train": str(tmp_path / "data.csv"), "label": "hired", "positive_label": "yes"},
           "features": {"numeric": ["age"], "categorical": ["job"]}}
    with pytest.raises(DataError, match=r"column 'age' is declared numeric but row 81 holds 'thirty'"):
        load_tabular(BaseSpec.from_dict(raw))
    data = load_tabular(BaseSpec.from_dict({**raw, "features": {"categorical": ["job", "age"]}}))
    assert data.labels == ["no", "yes"] and data.categorical == ["job", "age"]


def test_sensitive_features_stay_out_of_the_model(tmp_path: Path) -> None:
    from aiforge.tasks.tabular.data import load_tabular

    raw = {"name": "t", "task": "tabular-classification",
           "data": {"train": str(_csv(tmp_path)), "label": "hired", "positive_label": "yes",
                    "sensitive_features": ["sex"]}}
    data = load_tabular(BaseSpec.from_dict(raw))
    assert data.numeric == ["age"] and data.categorical == ["job"]
    data = load_tabular(BaseSpec.from_dict({**raw, "features": {"use_sensitive": True}}))
    assert data.categorical == ["job", "sex"]


def test_gate_table_and_a_failing_four_fifths_gate() -> None:
    rows = (*TABULAR_GATES, *GATES)
    assert {g.key for g in rows} == gate_keys(GateSpec) == {k for k in GateSpec.model_fields
                                                             if k not in ("sensitive_features", "decide",
                                                                          "allow_undecided")}
    groups = np.array(["a"] * 100 + ["b"] * 100)
    y = np.tile([0, 1], 100)
    pred = np.concatenate([np.ones(100, dtype=int), np.tile([0, 0, 0, 1], 25)])  # 1.0 vs 0.25 selected
    audit = audit_predictions(y, pred, pred.astype(float), pd.DataFrame({"g": groups}), AuditSettings(bootstrap=0))
    m = Measurements(audit=audit, size_mb=1.0, p95_latency_ms=2.0)
    results = evaluate_gates(rows, GateSpec(four_fifths=True, max_p95_latency_ms=1.0, min_accuracy=0.5), m, ["g"])
    by_key = {r.key: r for r in results}
    assert not by_key["four_fifths"].passed and by_key["four_fifths"].measured == pytest.approx(0.25)
    assert "b" in by_key["four_fifths"].note
    assert not by_key["max_p95_latency_ms"].passed and by_key["min_accuracy"].passed
    missing = evaluate_gates(rows, GateSpec(max_demographic_parity_difference=0.1), m, ["nope"])
    assert not missing[0].passed and missing[0].measured is None


def test_the_spec_in_docs_fairness_md_validates() -> None:
    import re

    import yaml

    text = (REPO / "docs" / "fairness.md").read_text(encoding="utf-8")
    block = re.search(r"## The spec\n\n```yaml\n(.*?)```", text, re.S)
    assert block is not None
    spec = BaseSpec.from_dict(yaml.safe_load(block.group(1)), base_dir=REPO)
    assert isinstance(spec, TabularSpec)
    assert spec.audit.mitigation.methods[0] == "threshold_optimizer" and spec.gates.four_fifths
    assert spec.gates.decide == "upper_bound" and spec.audit.mitigation.pick == "best"


def test_parquet_files_with_missing_values_train_and_predict(tmp_path: Path) -> None:
    from aiforge.tasks.tabular.samples import load_tabular_sample

    s = load_tabular_sample("german")
    train, test = s.train.copy(), s.test.copy()
    train.loc[::7, "duration"] = np.nan  # numeric gaps are imputed (median)
    train.loc[::11, "purpose"] = None  # categorical gaps become their own "" category
    train.to_parquet(tmp_path / "train.parquet")
    test.to_parquet(tmp_path / "test.parquet")
    spec = {"name": "german-pq", "task": "tabular-classification",
            "data": {"train": "train.parquet", "test": "test.parquet", "label": "credit", "positive_label": "good",
                     "sensitive_features": ["sex"]},
            "model": {"candidates": ["logistic"]}, "audit": {"bootstrap": 0}}
    (tmp_path / "aiforge.yaml").write_text(__import__("yaml").safe_dump(spec), encoding="utf-8")
    fitted = fit_export(load_spec(tmp_path / "aiforge.yaml").model_dump(mode="json"), tmp_path / "home")
    assert fitted.result.data.numeric[:2] == ["duration", "credit_amount"]
    import aiforge

    rt = aiforge.load(fitted.path)
    record = {c.name: None for c in rt.schema.columns}  # every field present, all missing
    p = rt.predict_proba([record])
    assert p.shape == (1, 2) and abs(p.sum() - 1) < 1e-6
    assert fitted.export.parity.details["label_agreement"] == 1.0

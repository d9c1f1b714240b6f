"""Demo data aiforge makes by itself, so ``make demo`` runs on a fresh machine.

``write_demo_intents`` writes a small customer-support intent set: six intents, each built
from hand-written phrasings crossed with a few fillers, split into train and test CSVs."""

from __future__ import annotations

import csv
import itertools
import random
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass


__all__ = ["DEMO_INTENTS", "write_demo_intents"]


DEMO_INTENTS: dict[str, list[str]] = {
    "card_lost": [
        "I lost my {card}", "my {card} was stolen", "I can't find my {card} anywhere",
        "someone took my {card}", "please block my {card}, it is missing", "my {card} is gone",
        "I think I left my {card} at the restaurant", "how do I report a stolen {card}",
    ],
    "balance": [
        "what is my {account} balance", "how much money is in my {account}", "show me my {account} balance",
        "check the balance of my {account}", "how much do I have left in my {account}",
        "tell me what's in my {account}", "can I see my {account} balance", "current balance on my {account}",
    ],
    "transfer": [
        "send money from my {account} to a friend", "transfer 50 euros out of my {account}",
        "how do I move money from my {account}", "I want to pay someone from my {account}",
        "make a bank transfer from my {account}", "wire money from my {account} abroad",
        "send cash to my brother from my {account}", "move funds out of my {account}",
    ],
    "opening_hours": [
        "when does the {place} open", "what time does the {place} close", "is the {place} open on sunday",
        "opening hours of the {place}", "until when is the {place} open today", "is the {place} open now",
        "what are the hours of the {place}", "does the {place} open on public holidays",
    ],
    "cancel": [
        "cancel my {plan}", "I want to stop my {plan}", "how do I end my {plan}", "terminate my {plan} please",
        "I don't want my {plan} anymore", "unsubscribe me from the {plan}", "close my {plan}",
        "get rid of my {plan}",
    ],
    "greeting": [
        "hello {who}", "hi {who}", "good morning {who}", "hey {who}, how are you", "good evening {who}",
        "hi there {who}", "greetings {who}", "hello {who}, nice to meet you",
    ],
}


_FILLERS = {
    "card": ["card", "debit card", "credit card", "visa card", "bank card"],
    "account": ["account", "savings account", "current account", "checking account", "joint account"],
    "place": ["branch", "bank", "office", "local branch", "support desk"],
    "plan": ["subscription", "premium plan", "membership", "monthly plan", "insurance"],
    "who": ["", "bot", "there", "assistant", "team"],
}


def _expand(template: str) -> list[str]:
    slot = next((k for k in _FILLERS if "{" + k + "}" in template), None)
    if slot is None:
        return [template]
    return [" ".join(template.replace("{" + slot + "}", v).split()) for v in _FILLERS[slot]]


def write_demo_intents(directory: Path, *, seed: int = 0, test_fraction: float = 0.2) -> tuple[Path, Path]:
    """Write ``train.csv`` and ``test.csv`` (columns ``text``, ``intent``); return their paths."""
    rng = random.Random(seed)
    rows = [(text, intent) for intent, templates in DEMO_INTENTS.items()
            for text in itertools.chain.from_iterable(_expand(t) for t in templates)]
    rng.shuffle(rows)
    by_intent: dict[str, list[tuple[str, str]]] = {}
    for row in rows:
        by_intent.setdefault(row[1], []).append(row)
    train, test = [], []
    for items in by_intent.values():
        cut = int(len(items) * test_fraction)
        test += items[:cut]
        train += items[cut:]
    directory.mkdir(parents=True, exist_ok=True)
    paths = (directory / "train.csv", directory / "test.csv")
    for path, part in zip(paths, (train, test), strict=True):
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["text", "intent"])
            writer.writerows(part)
    return paths

"""Question-answering evaluation of a chat bundle: is the gold source cited, does the answer hold the key, are
unanswerable questions refused (``aiforge eval BUNDLE --data qa.jsonl``).

A QA file is JSONL (or CSV) with one question per row::

    {"question": "Which function draws an antialiased circle?", "gold_source": "ref/draw.html",
     "answer_contains": "aacircle"}
    {"question": "What is the capital of Peru?", "unanswerable": true}

``answer_contains`` may be a list (any one counts); ``gold_source`` may be a list too (any
cited counts). A citation matches a gold source when its ``source`` equals it or ends with
``/`` + it.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiforge.errors import DataError

if TYPE_CHECKING:
    from aiforge.tasks.chat.runtime import ChatRuntime

__all__ = ["QAItem", "QAScores", "evaluate_qa", "is_qa_file", "read_qa"]


@dataclass(frozen=True)
class QAItem:
    """One question of a QA file."""

    question: str
    gold_sources: tuple[str, ...] = ()
    answer_contains: tuple[str, ...] = ()
    unanswerable: bool = False
    kind: str | None = None  # e.g. out_of_domain / close, for unanswerable rows
    split: str | None = None  # e.g. heldout: questions written after the ones a setting was tuned on


@dataclass
class QAScores:
    """What ``evaluate_qa`` measured: rates over answerable / unanswerable questions, latency, every row."""

    answerable: int
    unanswerable: int
    gold_cited: float  # answerable questions whose answer cites a gold source (a refusal cites nothing)
    gold_cited_when_answered: float
    answer_contains: float  # answerable questions whose answer holds the key
    answerable_refused: float
    unanswerable_refused: float  # refusal recall
    refusal_precision: float
    refused_by_kind: dict[str, float]
    latency_ms_p50: float
    latency_ms_p95: float
    rows: list[dict[str, Any]] = field(default_factory=list)
    by_split: dict[str, dict[str, Any]] = field(default_factory=dict)  # the rates above, split by split

    def to_dict(self, *, rows: bool = False) -> dict[str, Any]:
        """The scores as a JSON-ready dict (with every row when ``rows``)."""
        d = asdict(self)
        if not rows:
            d.pop("rows")
        return d


def is_qa_file(path: Path) -> bool:
    """Whether ``path`` looks like a QA file (its first row has a ``question`` field)."""
    try:
        with path.open(encoding="utf-8") as fh:
            first = fh.readline()
    except (OSError, UnicodeDecodeError):
        return False
    if path.suffix.lower() in (".jsonl", ".json"):
        try:
            return "question" in json.loads(first)
        except (ValueError, TypeError):
            return False
    return "question" in [c.strip().strip('"') for c in first.split(",")]


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise DataError(f"{where}: expected a string or a list of strings, got {value!r}")


def read_qa(path: Path) -> list[QAItem]:
    """The questions of a QA file (JSONL or CSV).

    Raises:
        DataError: the file is unreadable, or a row lacks ``question`` or both ``answer_contains`` and
            ``unanswerable``.
    """
    raw: list[dict[str, Any]] = []
    try:
        if path.suffix.lower() in (".jsonl", ".json"):
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except ValueError as exc:
                        raise DataError(f"{path}:{i}: not valid JSON ({exc}).") from exc
                    if not isinstance(row, dict):
                        raise DataError(f"{path}:{i}: expected a JSON object per line.")
                    raw.append(row)
        else:
            import csv

            with path.open(newline="", encoding="utf-8") as fh:
                raw = [dict(r) for r in csv.DictReader(fh)]
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc}).") from exc
    items = []
    for i, row in enumerate(raw, start=1):
        where = f"{path} row {i}"
        q = row.get("question")
        if not isinstance(q, str) or not q.strip():
            raise DataError(f"{where}: 'question' must be a non-empty string.")
        flag = row.get("unanswerable", False)
        unanswerable = flag is True or (isinstance(flag, str) and flag.strip().lower() in ("true", "1", "yes"))
        contains = _strings(row.get("answer_contains"), f"{where}.answer_contains")
        if not unanswerable and not contains:
            raise DataError(f"{where}: give 'answer_contains' (the key the answer must hold) or "
                            "'unanswerable': true.")
        items.append(QAItem(q.strip(), _strings(row.get("gold_source"), f"{where}.gold_source"), contains,
                            unanswerable, row.get("kind") if isinstance(row.get("kind"), str) else None,
                            row.get("split") if isinstance(row.get("split"), str) else None))
    if not items:
        raise DataError(f"{path}: no questions.")
    return items


def _cites(citations: Sequence[dict[str, Any]], gold: Sequence[str]) -> bool:
    return any(c["source"] == g or str(c["source"]).endswith("/" + g) for c in citations for g in gold)


def evaluate_qa(rt: ChatRuntime, items: Sequence[QAItem]) -> QAScores:
    """Ask every question (one at a time, no session) and score the answers."""
    rows: list[dict[str, Any]] = []
    for item in items:
        start = time.perf_counter()
        turn = rt.ask(item.question)
        took = (time.perf_counter() - start) * 1000
        no = turn.kind == "dont_know"
        text = turn.text.lower()
        rows.append({"question": item.question, "unanswerable": item.unanswerable, "kind": item.kind,
                     "split": item.split,
                     "refused": no, "ms": took, "answer": turn.text,
                     "cited": [c["source"] for c in turn.citations],
                     "gold_cited": bool(item.gold_sources) and _cites(turn.citations, item.gold_sources),
                     "contains": any(k.lower() in text for k in item.answer_contains) and not no,
                     "relevance": turn.citations[0].get("relevance") if turn.citations else None})
    scores = _rates(rows)
    splits = sorted({str(r["split"]) for r in rows if r["split"]})
    by_split = {name: _rates([r for r in rows if r["split"] == name]) for name in splits}
    if splits:
        by_split["unsplit"] = _rates([r for r in rows if not r["split"]])
    ms = sorted(float(r["ms"]) for r in rows)
    return QAScores(**scores, latency_ms_p50=statistics.median(ms),
                    latency_ms_p95=ms[min(len(ms) - 1, int(0.95 * len(ms)))], rows=rows, by_split=by_split)


def _rates(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ans = [r for r in rows if not r["unanswerable"]]
    una = [r for r in rows if r["unanswerable"]]
    answered = [r for r in ans if not r["refused"]]
    refused = [r for r in rows if r["refused"]]

    def rate(part: list[dict[str, Any]], key: str) -> float:
        return sum(bool(r[key]) for r in part) / len(part) if part else 0.0

    kinds = sorted({str(r["kind"]) for r in una if r["kind"]})
    return {"answerable": len(ans), "unanswerable": len(una),
            "gold_cited": rate(ans, "gold_cited"), "gold_cited_when_answered": rate(answered, "gold_cited"),
            "answer_contains": rate(ans, "contains"), "answerable_refused": rate(ans, "refused"),
            "unanswerable_refused": rate(una, "refused"),
            "refusal_precision": sum(r["unanswerable"] for r in refused) / len(refused) if refused else 1.0,
            "refused_by_kind": {k: rate([r for r in una if r["kind"] == k], "refused") for k in kinds}}

"""What ``aiforge eval``, ``audit`` and ``ship`` measure on a chat bundle (torch-free).

A chat bundle answers questions, so the numbers every kind has (size, p95 latency of one
``ask``) always apply. Given a QA file (rows with ``question`` and ``answer_contains`` or
``unanswerable: true``, see :mod:`aiforge.tasks.chat.qa`), ``aiforge eval`` scores the answers:
gold source cited, answer holds the key, refusal precision and recall, latency. Its intent
layer is a classifier: with intents and a labelled file of utterances (columns ``text`` and
``intent``) it gets intent accuracy and macro-F1, a per-intent report and the
``min_intent_*`` gates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from aiforge.audit.checks import Measured
from aiforge.audit.gates import Gate, Measurements, ReleaseGates
from aiforge.audit.metrics import Metrics, classification_metrics
from aiforge.audit.report import CheckReport, ReportTable, classifier_tables
from aiforge.bundle.runtime import Runtime
from aiforge.data.readers import read_table
from aiforge.errors import BundleError, DataError
from aiforge.spec import BaseSpec
from aiforge.tasks.chat.qa import evaluate_qa, is_qa_file, read_qa
from aiforge.tasks.chat.runtime import ChatRuntime
from aiforge.tasks.chat.spec import ChatSpec

__all__ = ["CHECKS", "ChatChecks"]


# What a latency probe asks when there is no data to pick a question from.
DEFAULT_QUESTION = "What do these documents cover?"


def _chat_runtime(rt: Runtime) -> ChatRuntime:
    if not isinstance(rt, ChatRuntime):
        raise BundleError(f"{rt.path}: expected a chat bundle, got {rt.manifest.task!r}.")
    return rt


def _utterances(rt: ChatRuntime, data: Path, columns: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """Texts and intent labels of a labelled file (columns ``text`` and ``intent`` or ``label``)."""
    if rt.intents is None:
        raise DataError(f"{rt.name}: this chat bundle has no intents, so there is nothing to score on {data}; "
                        "add an intents: block to the spec to evaluate intent detection (answers are not scored).")
    df = read_table(data)
    text = columns.get("text", "text")
    label = columns.get("label") or ("intent" if "intent" in df.columns else "label")
    missing = [c for c in (text, label) if c not in df.columns]
    if missing:
        raise DataError(f"{data}: column(s) {missing} not found. Columns are {list(df.columns)}. Intent evaluation "
                        "needs a text column and an intent column (--column text=NAME --column label=NAME).")
    labels = df[label].astype(str).tolist()
    unknown = sorted(set(labels) - set(rt.labels))
    if unknown:
        raise DataError(f"{data}: intent(s) {unknown[:10]} are not among this bundle's intents {rt.labels}.")
    return df[text].astype(str).tolist(), labels


def _intent_metrics(rt: ChatRuntime, data: Path, columns: Mapping[str, str]) -> tuple[Metrics, list[str]]:
    texts, labels = _utterances(rt, data, columns)
    return classification_metrics(labels, rt.predict_proba(texts), rt.labels), texts


def _gate(key: str, metric: str, what: str) -> Gate:
    def read(m: Measurements, feature: str | None) -> float | None:
        value = m.audit.get(metric)
        return float(value) if isinstance(value, int | float) else None

    return Gate(key, f"intent {what} of the exported bundle", "min", read)


def _qa_report(rt: ChatRuntime, data: Path) -> CheckReport:
    scores = evaluate_qa(rt, read_qa(data))
    d = scores.to_dict()
    keys = ("gold_cited", "gold_cited_when_answered", "answer_contains", "answerable_refused",
            "unanswerable_refused", "refusal_precision", "latency_ms_p50", "latency_ms_p95")
    rows = [[k, f"{d[k]:.1f}" if "latency" in k else f"{d[k]:.3f}"] for k in keys]
    rows += [[f"unanswerable_refused[{kind}]", f"{rate:.3f}"] for kind, rate in scores.refused_by_kind.items()]
    table = ReportTable(f"{rt.name}:{rt.version} answers on {data.name} ({scores.answerable} answerable, "
                        f"{scores.unanswerable} unanswerable)", ["measure", "value"], rows)
    missed = [[r["question"][:70], "refused" if r["refused"] else "answered",
               "yes" if r["gold_cited"] else "no", "yes" if r["contains"] else "no"]
              for r in scores.rows if (r["unanswerable"] != r["refused"]) or
              (not r["unanswerable"] and not (r["gold_cited"] and r["contains"]))]
    tables = [table]
    if missed:
        tables.append(ReportTable("questions answered wrongly or refused wrongly",
                                  ["question", "outcome", "gold cited", "holds key"], missed[:20]))
    return CheckReport(f"{rt.name}:{rt.version} answers on {data}", scores.to_dict(rows=True), tables)


class ChatChecks:
    """Intent metrics (when the bundle has intents), and size and latency for every chat bundle."""

    gates = (_gate("min_intent_accuracy", "accuracy", "accuracy"), _gate("min_intent_macro_f1", "macro_f1", "macro-F1"))

    def evaluate(self, rt: Runtime, data: Path, *, columns: Mapping[str, str]) -> CheckReport:
        """Answer quality on a QA file, or intent accuracy, macro-F1 and per-intent scores on labelled utterances."""
        if is_qa_file(data):
            return _qa_report(_chat_runtime(rt), data)
        metrics, _ = _intent_metrics(_chat_runtime(rt), data, columns)
        return CheckReport(f"{rt.name}:{rt.version} intents on {data}", metrics.to_dict(),
                           classifier_tables(metrics, title=f"{rt.name}:{rt.version} intents on {data.name}"))

    def audit(self, rt: Runtime, data: Path, *, sensitive: Sequence[str], output: Path) -> CheckReport:
        """Every intent's precision/recall/F1 on labelled utterances."""
        chat_rt = _chat_runtime(rt)
        if sensitive:
            raise DataError(f"{rt.name}: chat bundles have no per-group audit; drop --sensitive for the per-intent "
                            "report.")
        metrics, _ = _intent_metrics(chat_rt, data, {})
        return CheckReport(f"{rt.name}:{rt.version}: intent audit on {data.name}", {"overall": metrics.to_dict()},
                           classifier_tables(metrics, title=f"{rt.name}:{rt.version} intents on {data.name}",
                                             limit=len(chat_rt.labels)))

    def measure(self, rt: Runtime, spec: BaseSpec, gates: ReleaseGates, data: Path | None) -> Measured:
        """Intent metrics on ``data`` (when given and the bundle has intents); a question to time ``ask`` with.

        Raises:
            DataError: an intent gate is set without intents or without ``--data``.
        """
        chat_rt = _chat_runtime(rt)
        wanted = [g.key for g in self.gates if gates.is_set(g.key)]
        audit: dict[str, Any] = {}
        question = DEFAULT_QUESTION
        if isinstance(spec, ChatSpec) and spec.intents is not None:
            question = spec.intents.items[0].examples[0]
        if wanted and data is None:
            raise DataError(f"{rt.name}: gate(s) {wanted} need labelled utterances; pass --data FILE with text and "
                            "intent columns (a chat spec has no test split).")
        if data is not None and (wanted or chat_rt.intents is not None):
            metrics, texts = _intent_metrics(chat_rt, data, {})
            audit = metrics.to_dict()
            question = sorted(texts, key=len)[len(texts) // 2]
        return Measured(audit, lambda: chat_rt.ask(question), source=str(data) if data else "")


CHECKS = ChatChecks()

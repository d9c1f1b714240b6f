"""The second retrieval stage and abstention: a cross-encoder over the fused candidates, a calibrated threshold.

Hybrid retrieval (BM25 + dense, fused by reciprocal rank) proposes ``rerank.candidates``
chunks; the cross-encoder (ms-marco-MiniLM-L-12-v2, int8 ONNX, torch-free) scores each
(question, heading + chunk) pair in one batch and the ``k`` best are kept. The best score
says whether the documents answer the question at all: below the threshold the answer is
"I don't know". The threshold is calibrated at index time (:func:`calibrate_abstention`)
on questions the documents cannot answer (generated out-of-domain questions plus the
user's own ``rerank.unanswerable``) against questions generated from the documents.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from aiforge.hub.reranker import CrossEncoder
from aiforge.tasks.chat.focused import FocusedAnswer
from aiforge.tasks.chat.index import Hit, KnowledgeIndex

__all__ = ["OUT_OF_DOMAIN_QUESTIONS", "Calibration", "calibrate_abstention", "choose_threshold", "generated_questions",
           "passage_text", "rerank_hits", "trade_off"]


# Questions no software documentation answers: the negative side of the abstention threshold.
OUT_OF_DOMAIN_QUESTIONS = (
    "What is the capital of Peru?", "Who painted the Mona Lisa?", "How tall is Mount Everest?",
    "What is the boiling point of water in Fahrenheit?", "Who won the football World Cup in 2014?",
    "How many bones are in the human body?", "What is a good recipe for banana bread?",
    "When did the Roman Empire fall?", "What is the population of Canada?", "How do I treat a sunburn?",
    "What is the speed of light?", "Who wrote War and Peace?", "How long should I boil an egg?",
    "What causes the northern lights?", "Which planet is the largest in the solar system?",
    "How do I apply for a passport?", "What is the exchange rate between euros and dollars?",
    "What are the symptoms of the flu?", "How do I grow tomatoes on a balcony?",
    "Who was the first person to walk on the moon?", "What is the best time to visit Japan?",
    "How many players are on a basketball team?", "What is the tallest building in the world?",
    "How do I change a flat tyre?", "What language is spoken in Brazil?", "How do vaccines work?",
    "What is the plot of Hamlet?", "How much water should I drink each day?",
    "What is the difference between a crocodile and an alligator?", "How do I get a mortgage?",
    "What year did the Berlin Wall come down?", "Where is the Great Barrier Reef?",
    "What is photosynthesis?", "How do I train my dog to sit?", "Who composed the Four Seasons?",
    "What is the chemical formula of table salt?", "How many continents are there?",
    "What should I pack for a ski holiday?", "How is cheese made?", "Who invented the telephone?",
)


def passage_text(hit: Hit) -> str:
    """What the cross-encoder reads of a chunk: the last heading part (a definition's name) and the text."""
    leaf = hit.heading.rsplit(" > ", 1)[-1]
    return f"{leaf}\n{hit.text}" if leaf else hit.text


def rerank_hits(reranker: CrossEncoder, query: str, hits: Sequence[Hit], *, k: int) -> list[Hit]:
    """The ``k`` best of ``hits`` by cross-encoder logit (each hit's ``relevance``), best first."""
    if not hits:
        return []
    scores = reranker.score(query, [passage_text(h) for h in hits])
    order = np.argsort(-scores, kind="stable")[:k]
    return [dataclasses.replace(hits[int(i)], relevance=float(scores[int(i)])) for i in order]


@dataclass(frozen=True)
class Calibration:
    """The abstention thresholds (best passage logit, then best sentence logit) and how they were chosen."""

    threshold: float
    method: str
    answerable: list[float]
    unanswerable: list[float]
    sources: dict[str, int]
    sentence_threshold: float | None = None
    sentence_method: str = ""
    # best sentence logit of the questions whose best passage passed ``threshold`` (-inf: refused by the passage)
    answerable_sentence: list[float] = dataclasses.field(default_factory=list)
    unanswerable_sentence: list[float] = dataclasses.field(default_factory=list)
    unanswerable_kind: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The record stored in pipeline.json and metrics.json (scores summarised, the trade-off curves)."""
        a, u = np.asarray(self.answerable), np.asarray(self.unanswerable)
        at = trade_off(a, u, [self.threshold])[0]
        out: dict[str, Any] = {
            "threshold": self.threshold, "method": self.method, "questions": self.sources,
            "answerable_answered": at["answerable_answered"], "unanswerable_refused": at["unanswerable_refused"],
            "answerable_score_quantiles": _quantiles(a), "unanswerable_score_quantiles": _quantiles(u),
            "curve": trade_off(a, u, sorted({round(float(t), 1) for t in np.arange(-8.0, 8.01, 1.0)}
                                            | {round(self.threshold, 3)}))}
        if self.sentence_threshold is not None:
            sa, su = np.asarray(self.answerable_sentence), np.asarray(self.unanswerable_sentence)
            both = trade_off(sa, su, [self.sentence_threshold])[0]
            kinds = np.asarray(self.unanswerable_kind)
            out.update(
                sentence_threshold=self.sentence_threshold, sentence_method=self.sentence_method,
                answerable_answered=both["answerable_answered"], unanswerable_refused=both["unanswerable_refused"],
                passage_only={"answerable_answered": at["answerable_answered"],
                              "unanswerable_refused": at["unanswerable_refused"]},
                unanswerable_refused_by_kind={str(k): float((su[kinds == k] < self.sentence_threshold).mean())
                                              for k in sorted(set(self.unanswerable_kind))},
                sentence_score_quantiles={"answerable": _quantiles(sa[np.isfinite(sa)]),
                                          "unanswerable": _quantiles(su[np.isfinite(su)])},
                sentence_curve=trade_off(sa, su, sorted({round(float(t), 1) for t in np.arange(-4.0, 8.01, 1.0)}
                                                        | {round(self.sentence_threshold, 3)})))
        return out


def choose_threshold(answerable: np.ndarray, unanswerable: np.ndarray, *, target_answered: float) -> float:
    """The cut that best separates the two sides while answering ``target_answered`` of the answerable ones.

    Among the cuts that keep at least ``target_answered`` of ``answerable`` answered, the one that
    maximises the mean of answered and refused rates; ties are broken by the highest cut (refusing
    more of the unanswerable questions nobody generated). -inf scores (already refused) count as refused.
    """
    a, u = answerable[np.isfinite(answerable)], unanswerable[np.isfinite(unanswerable)]
    if not len(a):
        return 0.0
    grid = np.unique(np.concatenate([a, u]))
    cuts = np.concatenate([[grid[0] - 1.0], (grid[:-1] + grid[1:]) / 2, [grid[-1] + 1.0]])
    answered = np.array([(answerable >= t).mean() for t in cuts])
    refused = np.array([(unanswerable < t).mean() if len(unanswerable) else 1.0 for t in cuts])
    ok = answered >= min(target_answered, float(answered.max())) - 1e-12
    score = np.where(ok, 0.5 * answered + 0.5 * refused, -1.0)
    return float(cuts[np.flatnonzero(score >= score.max() - 1e-12)[-1]])


def _quantiles(x: np.ndarray) -> dict[str, float]:
    if not len(x):
        return {}
    return {f"p{q}": float(np.percentile(x, q)) for q in (5, 25, 50, 75, 95)}


def trade_off(answerable: np.ndarray, unanswerable: np.ndarray, thresholds: Sequence[float]) -> list[dict[str, float]]:
    """For each threshold: share of answerable questions answered and of unanswerable ones refused."""
    out = []
    for t in thresholds:
        out.append({"threshold": float(t),
                    "answerable_answered": float((answerable >= t).mean()) if len(answerable) else 1.0,
                    "unanswerable_refused": float((unanswerable < t).mean()) if len(unanswerable) else 1.0})
    return out


_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_]+")


def generated_questions(index: KnowledgeIndex, *, n: int, seed: int = 0) -> list[tuple[str, int]]:
    """Questions the documents answer, made from them: (question, chunk id) pairs.

    A chunk that documents an API definition asks what the definition does ("What does
    ``Rect.move`` do?"); any other chunk asks about the words of one of its sentences.
    """
    rng = np.random.default_rng(seed)
    ids = rng.permutation(index.size)[: max(n * 3, n)].tolist()
    out: list[tuple[str, int]] = []
    for hit in index.fetch([(int(i), 0.0, 0.0) for i in ids]):
        sentences = [hit.text[a:b] for a, b in (index.sentence_span[s] for s in index.sentences_of(hit.chunk_id))]
        long = [s for s in sentences if len(_WORD.findall(s)) >= 6]
        if hit.definition:
            name = hit.definition.split(":")[0].strip().split(".")[-1]
            summary = long[0] if long else ""
            words = _WORD.findall(summary)[:8]
            question = (f"Which function {' '.join(words).lower()}?" if words and rng.random() < 0.5
                        else f"What does {name} do?")
        elif long:
            words = _WORD.findall(long[int(rng.integers(len(long)))])[:10]
            question = f"What about {' '.join(words)}?"
        else:
            continue
        out.append((question, hit.chunk_id))
        if len(out) == n:
            break
    return out


def calibrate_abstention(search: Callable[[str, str | None], list[Hit]], reranker: CrossEncoder,
                         index: KnowledgeIndex, *, unanswerable: Sequence[str], n_generated: int, margin: float = 3.0,
                         fixed: float | None = None, fixed_sentence: float | None = None,
                         target_answered: float = 0.95, sentences: bool = True, seed: int = 0) -> Calibration:
    """Choose the abstention thresholds: on the best passage logit, then on the best sentence logit.

    ``search(question, excluded_source)`` runs a question through retrieval and reranking as served
    (leaving out the chunks of ``excluded_source`` when given). Answerable: questions generated from
    ``n_generated`` chunks, scored against the chunk they came from (a lower bound of what retrieval
    finds). Unanswerable: ``n_generated`` of :data:`OUT_OF_DOMAIN_QUESTIONS`, the user's own, and
    *close-domain* negatives: the same generated questions asked with their page left out of the index
    (questions in the documents' own words whose answer is not there).

    Passage stage: :func:`choose_threshold` on the best passage logit, keeping half of the budget
    ``1 - target_answered`` (out-of-domain questions sit far below; close ones do not). Sentence stage
    (``sentences``): every question the passage stage answers has the sentences of its answer passages
    scored (:meth:`FocusedAnswer.evidence`); the sentence threshold keeps ``target_answered`` of the
    generated answerable questions overall and refuses what it can of the rest. ``fixed`` /
    ``fixed_sentence`` override either (the trade-off is still measured and recorded).
    """
    rng = np.random.default_rng(seed)
    ood = [OUT_OF_DOMAIN_QUESTIONS[int(i)] for i in
           rng.permutation(len(OUT_OF_DOMAIN_QUESTIONS))[:n_generated]]
    pairs = generated_questions(index, n=n_generated, seed=seed)
    by_id = {h.chunk_id: h for h in index.fetch([(cid, 0.0, 0.0) for _, cid in pairs])}
    pairs = [(q, cid) for q, cid in pairs if cid in by_id]
    negatives: list[tuple[str, str | None, str]] = [*((q, None, "out_of_domain") for q in ood),
                                                    *((q, None, "user") for q in unanswerable)]
    if sentences:
        negatives += [(q, by_id[cid].source, "close_generated") for q, cid in pairs
                      if len({h.source for h in by_id.values()}) > 1]
    neg_hits = [search(q, excluded) for q, excluded, _ in negatives]
    neg = [h[0].relevance if h and h[0].relevance is not None else -1e9 for h in neg_hits]
    pos = reranker.score_pairs([(q, passage_text(by_id[cid])) for q, cid in pairs]).tolist()
    a, u = np.asarray(pos, dtype=np.float64), np.asarray(neg, dtype=np.float64)
    kinds = [k for _, _, k in negatives]
    sources = {"generated_answerable": len(pos), "generated_out_of_domain": len(ood),
               "user_unanswerable": len(unanswerable), "generated_close_domain": kinds.count("close_generated")}
    if not len(a) or not len(u):
        return Calibration(0.0 if fixed is None else float(fixed), "default 0.0 (nothing to calibrate on)",
                           pos, neg, sources)
    passage_target = 1.0 - (1.0 - target_answered) / (2 if sentences else 1)
    if fixed is not None:
        threshold, method = float(fixed), "fixed in spec (rerank.threshold)"
    else:
        threshold = choose_threshold(a, u, target_answered=passage_target)
        method = (f"best mean of answerable answered and unanswerable refused among the thresholds that answer "
                  f"{passage_target:.1%} of generated answerable questions (highest of ties)")
    if not sentences:
        return Calibration(threshold, method, pos, neg, sources)
    focused = FocusedAnswer(reranker, index, threshold=threshold, margin=margin)
    pos_s = [focused.evidence(q, [dataclasses.replace(by_id[cid], relevance=p)]).best if p >= threshold
             else -np.inf for (q, cid), p in zip(pairs, pos, strict=True)]
    neg_s = [focused.evidence(q, hits).best if n >= threshold else -np.inf
             for (q, _, _), hits, n in zip(negatives, neg_hits, neg, strict=True)]
    sa, su = np.asarray(pos_s, dtype=np.float64), np.asarray(neg_s, dtype=np.float64)
    if fixed_sentence is not None:
        sentence, sentence_method = float(fixed_sentence), "fixed in spec (rerank.sentence_threshold)"
    else:
        sentence = choose_threshold(sa, su, target_answered=target_answered)
        sentence_method = (f"best mean of answerable answered and unanswerable refused (passage and sentence "
                           f"stages together) among the thresholds that answer {target_answered:.0%} of generated "
                           "answerable questions (highest of ties)")
    return Calibration(threshold, method, pos, neg, sources, sentence, sentence_method,
                       [float(x) for x in sa], [float(x) for x in su], kinds)

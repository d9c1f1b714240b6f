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
from aiforge.tasks.chat.index import Hit, KnowledgeIndex

__all__ = ["OUT_OF_DOMAIN_QUESTIONS", "Calibration", "calibrate_abstention", "generated_questions",
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
    """The abstention threshold on the best reranker logit and how it was chosen."""

    threshold: float
    method: str
    answerable: list[float]
    unanswerable: list[float]
    sources: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        """The record stored in pipeline.json and metrics.json (scores summarised, the trade-off curve)."""
        a, u = np.asarray(self.answerable), np.asarray(self.unanswerable)
        at = trade_off(a, u, [self.threshold])[0]
        return {"threshold": self.threshold, "method": self.method, "questions": self.sources,
                "answerable_answered": at["answerable_answered"],
                "unanswerable_refused": at["unanswerable_refused"],
                "answerable_score_quantiles": _quantiles(a), "unanswerable_score_quantiles": _quantiles(u),
                "curve": trade_off(a, u, sorted({round(float(t), 1) for t in np.arange(-8.0, 8.01, 1.0)}
                                                | {round(self.threshold, 3)}))}


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


def calibrate_abstention(search: Callable[[str], list[Hit]], reranker: CrossEncoder, index: KnowledgeIndex, *,
                         unanswerable: Sequence[str], n_generated: int, fixed: float | None = None,
                         target_answered: float = 0.95, seed: int = 0) -> Calibration:
    """Choose the threshold on the best reranker logit that separates answerable from unanswerable questions.

    Unanswerable: ``n_generated`` of :data:`OUT_OF_DOMAIN_QUESTIONS` and the user's own, each
    through the same retrieval and reranking as a served question (the best logit counts).
    Answerable: questions generated from ``n_generated`` chunks, scored against the chunk they
    came from (a lower bound of what retrieval would find). The threshold maximises the mean of
    the two rates (the midpoint of the best interval), raised to the score that still answers
    ``target_answered`` of the generated answerable questions: generated out-of-domain questions
    sit far below any real question, so they cannot say where the questions close to the domain
    lie; the highest threshold the answerable side allows refuses most of those too. ``fixed``
    overrides it (the trade-off is still measured and recorded).
    """
    rng = np.random.default_rng(seed)
    ood = [OUT_OF_DOMAIN_QUESTIONS[int(i)] for i in
           rng.permutation(len(OUT_OF_DOMAIN_QUESTIONS))[:n_generated]]
    negatives = [*ood, *unanswerable]
    neg = [max((h.relevance or -1e9 for h in search(q)), default=-1e9) for q in negatives]
    pairs = generated_questions(index, n=n_generated, seed=seed)
    hits = {h.chunk_id: h for h in index.fetch([(cid, 0.0, 0.0) for _, cid in pairs])}
    pos = reranker.score_pairs([(q, passage_text(hits[cid])) for q, cid in pairs if cid in hits]).tolist()
    a, u = np.asarray(pos, dtype=np.float64), np.asarray(neg, dtype=np.float64)
    sources = {"generated_answerable": len(pos), "generated_out_of_domain": len(ood),
               "user_unanswerable": len(unanswerable)}
    if fixed is not None:
        return Calibration(float(fixed), "fixed in spec (rerank.threshold)", pos, neg, sources)
    if not len(a) or not len(u):
        return Calibration(0.0, "default 0.0 (nothing to calibrate on)", pos, neg, sources)
    grid = np.unique(np.concatenate([a, u]))
    cuts = np.concatenate([[grid[0] - 1.0], (grid[:-1] + grid[1:]) / 2, [grid[-1] + 1.0]])
    score = np.array([0.5 * (a >= t).mean() + 0.5 * (u < t).mean() for t in cuts])
    best = np.flatnonzero(score >= score.max() - 1e-12)
    midpoint = float((cuts[best[0]] + cuts[best[-1]]) / 2)
    keep = float(np.quantile(a, 1.0 - target_answered)) if target_answered < 1 else float(a.min())
    threshold = max(midpoint, keep)
    return Calibration(threshold, f"max mean of answerable answered and unanswerable refused (midpoint "
                                  f"{midpoint:.2f}), raised to keep {target_answered:.0%} of generated answerable "
                                  "questions", pos, neg, sources)

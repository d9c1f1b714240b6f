"""Focused extractive answers: the best passage's best sentences by reranker score, definition first.

With a reranker, the extractive answer is no longer "the sentences most similar to the
question across every retrieved chunk": the passage the cross-encoder ranked first (and
the second when it scores within ``margin``) is cut into its sentences, each sentence is
scored against the question by the same cross-encoder (prefixed with the definition or
heading it belongs to, so "returns a new rectangle" still knows it is about
``Rect.move``), sentences below the relevance threshold are dropped, and the definition
(name and signature) the passage documents comes first. Every sentence carries one
citation: the number of the passage it was taken from.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from aiforge.hub.reranker import CrossEncoder
from aiforge.tasks.chat.index import Hit, KnowledgeIndex
from aiforge.tasks.chat.sanitize import plain_text

__all__ = ["AnswerSentence", "Evidence", "FocusedAnswer"]


@dataclass(frozen=True)
class AnswerSentence:
    """One sentence of an answer: its citation number, text, reranker logit, and whether it is a definition."""

    n: int
    text: str
    score: float
    definition: bool = False


@dataclass(frozen=True)
class Evidence:
    """The sentences of the answer passages, each with its reranker logit against the question."""

    candidates: list[tuple[int, Hit, str]]  # (citation number, passage, sentence)
    scores: list[float]

    @property
    def best(self) -> float:
        """The best sentence's logit: whether any sentence of the passages answers the question."""
        return max(self.scores, default=-1e9)


class FocusedAnswer:
    """Pick and stream the sentences of a focused extractive answer."""

    def __init__(self, reranker: CrossEncoder, index: KnowledgeIndex, *, threshold: float, max_sentences: int = 3,
                 margin: float = 3.0) -> None:
        self.reranker = reranker
        self.index = index
        self.threshold = threshold
        self.max_sentences = max_sentences
        self.margin = margin

    def _sentences(self, hit: Hit) -> list[str]:
        spans = [self.index.sentence_span[s] for s in self.index.sentences_of(hit.chunk_id)]
        out = [" ".join(hit.text[a:b].split()) for a, b in spans]
        if hit.definition:  # the term line of a definition ("pygame.Rect.move()") is said by the definition
            name = hit.definition.split(":")[0].strip()
            out = [s for s in out if not (s.startswith(name) and len(s) <= len(name) + 4)]
        return out or [" ".join(hit.text[:400].split())]

    def passages(self, hits: Sequence[Hit]) -> list[tuple[int, Hit]]:
        """The passages an answer is cut from: the first, and the second when it scores within ``margin``."""
        top = hits[0].relevance if hits and hits[0].relevance is not None else 0.0
        return [(n, h) for n, h in enumerate(hits, start=1)
                if n == 1 or (h.relevance is not None and h.relevance >= max(self.threshold, top - self.margin)
                              and n <= 2)]

    def evidence(self, question: str, hits: Sequence[Hit]) -> Evidence:
        """Every sentence of the answer passages scored against ``question`` in one batched reranker call."""
        candidates = [(n, h, s) for n, h in self.passages(hits) for s in self._sentences(h)]
        context = [(h.definition or h.heading.rsplit(" > ", 1)[-1]) for _, h, _ in candidates]
        scores = self.reranker.score_pairs([(question, f"{c}: {s}" if c else s)
                                            for c, (_, _, s) in zip(context, candidates, strict=True)])
        return Evidence(candidates, [float(x) for x in scores])

    def select(self, question: str, hits: Sequence[Hit], evidence: Evidence | None = None) -> list[AnswerSentence]:
        """The sentences of the answer for reranked ``hits`` (best first, each with ``relevance`` set).

        ``evidence`` is :meth:`evidence` for the same question and hits, when the caller has it already.
        """
        if not hits:
            return []
        ev = evidence if evidence is not None else self.evidence(question, hits)
        candidates, scores = ev.candidates, ev.scores
        if not candidates:
            return []
        order = sorted(range(len(candidates)), key=lambda i: -float(scores[i]))
        best = float(scores[order[0]])
        chosen: list[AnswerSentence] = []
        seen: list[str] = []
        for rank, i in enumerate(order):
            n, _, sentence = candidates[i]
            score = float(scores[i])
            if rank and (score < self.threshold or score < best - self.margin):
                break  # the best sentence stays: its passage passed the threshold
            key = sentence.lower()
            if any(key in s or s in key for s in seen):
                continue  # chunks overlap: the same sentence again, or a piece of one
            seen.append(key)
            chosen.append(AnswerSentence(n, sentence, score))
            if len(chosen) == self.max_sentences:
                break
        # passage by passage, the reranker's best first, each led by the definition it documents
        out: list[AnswerSentence] = []
        for n in sorted({c.n for c in chosen}):
            definition = hits[n - 1].definition
            if definition:
                out.append(AnswerSentence(n, definition, best, definition=True))
            out.extend(c for c in chosen if c.n == n)
        return out

    @staticmethod
    def stream(sentences: Sequence[AnswerSentence]) -> Iterator[str]:
        """The answer word by word; each sentence ends with its citation ``[n]``."""
        first = True
        for s in sentences:
            text = plain_text(s.text)  # the answer quotes documents: no markup, no script link
            if not text:
                continue
            for word in f"{text} [{s.n}]".split(" "):
                yield word if first else " " + word
                first = False

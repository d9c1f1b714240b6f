"""Retrieval and intent evaluation on labelled utterances (kNN retrieval, out-of-scope rejection)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aiforge.hub.onnx_encoder import OnnxEncoder
from aiforge.tasks.chat.index import IndexRows, KnowledgeIndex, write_index

__all__ = ["RetrievalScores", "knn_retrieval", "labelled_index"]


@dataclass(frozen=True)
class RetrievalScores:
    """kNN retrieval quality: is an utterance of the query's label at rank 1, in the top 5, and how high."""

    mode: str
    queries: int
    hit_at_1: float
    hit_at_5: float
    mrr: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def labelled_index(directory: Path, texts: list[str], labels: list[str], encoder: OnnxEncoder, *,
                   vectors: np.ndarray | None = None) -> KnowledgeIndex:
    """An index whose chunks are ``texts`` (one each, with their label), written to ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    vecs = encoder.embed(texts) if vectors is None else vectors
    rows = IndexRows(files=[("utterances", "", len(texts))],
                     chunks=[("utterances", "", 0, len(t), t, y, None) for t, y in zip(texts, labels, strict=True)],
                     vectors=vecs, sentences=[], sentence_vectors=np.zeros((0, vecs.shape[1]), np.float32))
    write_index(directory, rows)
    return KnowledgeIndex(directory)


def knn_retrieval(index: KnowledgeIndex, queries: list[str], labels: list[str], query_vectors: np.ndarray, *,
                  mode: str, candidates: int = 50, rrf_k: float = 60.0, dense_weight: float = 0.5) -> RetrievalScores:
    """hit@1, hit@5 and MRR (over the first ``candidates``) of retrieving same-label utterances."""
    label_of = {int(cid): lab for cid, lab in index._conn().execute("SELECT id, label FROM chunks")}
    hit1 = hit5 = rr = 0.0
    for q, y, v in zip(queries, labels, query_vectors, strict=True):
        hits = index.search(q, v, k=candidates, mode=mode, candidates=candidates, rrf_k=rrf_k,
                            dense_weight=dense_weight)
        ranks = [r for r, h in enumerate(hits, start=1) if label_of[h.chunk_id] == y]
        first = ranks[0] if ranks else None
        hit1 += first == 1
        hit5 += first is not None and first <= 5
        rr += 1.0 / first if first else 0.0
    n = max(1, len(queries))
    return RetrievalScores(mode, len(queries), hit1 / n, hit5 / n, rr / n)

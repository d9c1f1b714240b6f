"""The torch-free sentence encoder: MiniLM as ONNX, mean-pooled and L2-normalised."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from aiforge.bundle.runtime import onnx_session
from aiforge.bundle.tokens import encode_batches

__all__ = ["ENCODER_GRAPH", "ENCODER_TOKENIZER", "OnnxEncoder"]


ENCODER_GRAPH = "encoder.onnx"


ENCODER_TOKENIZER = "encoder_tokenizer.json"


class OnnxEncoder:
    """Unit-length embeddings from ``encoder.onnx``; thread-safe (onnxruntime sessions are)."""

    def __init__(self, graph: Path, tokenizer: Path, *, max_length: int = 256, threads: int | None = None,
                 batch_size: int = 64) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(tokenizer))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=max_length)
        self.session = onnx_session(graph, threads=threads)
        self.dim = int(self.session.get_outputs()[0].shape[-1])
        self.batch_size = batch_size

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One float32 row of unit length per text, in input order."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        for idx, ids, mask in encode_batches(self.tokenizer, list(texts), self.batch_size):
            out[idx] = self.session.run(["embeddings"], {"input_ids": ids, "attention_mask": mask})[0]
        return out

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` (without special tokens, untruncated)."""
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

"""The shared PyTorch text encoder (MiniLM mean-pooled or bge-small [CLS]-pooled, L2 norm) and its tokenizer helpers.

Used by text classification (as its backbone), recommendation (content embeddings) and the
encoder export that chat bundles ship (``hub/encoder_export.py``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import nn

from aiforge.bundle.tokens import encode_batches
from aiforge.errors import BackboneError
from aiforge.hub.catalog import Backbone, offline_env

__all__ = ["FEATURE_SCALE", "POOLINGS", "TextEncoder", "iter_batches", "load_tokenizer"]


# Pooled embeddings are L2-normalised (as all-MiniLM-L6-v2 was trained) and then scaled, so a
# freshly initialised linear head sees logits of a useful size: a fixed temperature.
FEATURE_SCALE = 10.0


# the catalog's pooling names a text encoder can have
POOLINGS = frozenset({"mean+l2", "cls+l2"})


def load_tokenizer(path: Path, max_length: int) -> Tokenizer:
    """A fast tokenizer from ``tokenizer.json`` that truncates to ``max_length``, no padding."""
    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.enable_truncation(max_length=max_length)
    return tok


def iter_batches(tok: Tokenizer, texts: Sequence[str], batch_size: int, *,
                 sort: bool = True) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
    """Yield (indices, input_ids, attention_mask) as torch tensors, padded per batch."""
    for idx, ids, mask in encode_batches(tok, texts, batch_size, sort=sort):
        yield idx, torch.from_numpy(ids), torch.from_numpy(mask)


class TextEncoder(nn.Module):
    """A transformer encoder pooled as its catalog row says ([CLS] for bge-small, mean for MiniLM), L2
    normalised, times FEATURE_SCALE.

    A ``files`` backbone (bge-small: an int8 ONNX graph in a package) gets float32 PyTorch weights
    dequantized from that graph (``hub/dequantize.py``), built in memory at load time."""

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        if backbone.pooling not in POOLINGS:
            raise BackboneError(f"backbone {backbone.name!r} is a {backbone.kind} (pooling {backbone.pooling!r}), "
                                f"not a text encoder; text encoders pool by {sorted(POOLINGS)}: "
                                "use minilm-l6 or bge-small.")
        self.pooling = backbone.pooling
        offline_env()
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        if backbone.access == "files":
            from aiforge.hub.dequantize import bert_from_int8_onnx

            self.transformer = bert_from_int8_onnx(backbone.path())
        else:
            from transformers import AutoModel

            try:
                self.transformer = AutoModel.from_pretrained(str(backbone.path()), local_files_only=True)
            except OSError as exc:
                raise BackboneError(f"backbone {backbone.name!r}: cannot load weights ({exc}).") from exc
        self.dim = int(self.transformer.config.hidden_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "cls+l2":
            pooled = hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2.0, dim=1) * FEATURE_SCALE

    @torch.inference_mode()
    def embed(self, tok: Tokenizer, texts: Sequence[str], *, batch_size: int = 128,
              on_batch: object = None) -> np.ndarray:
        """Pooled features for ``texts`` as a float32 array, in input order."""
        self.eval()
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for idx, ids, mask in iter_batches(tok, texts, batch_size):
            out[idx] = self(ids, mask).numpy()
            if callable(on_batch):
                on_batch(len(idx))
        return out

"""Item text embeddings with a hub text encoder (minilm-l6 or bge-small): L2-normalised, float32 (needs torch)."""

from __future__ import annotations

import numpy as np

from aiforge.hub.catalog import get_backbone
from aiforge.progress import progress_bar

__all__ = ["embed_texts"]


def embed_texts(texts: list[str], *, backbone: str = "minilm-l6", max_length: int = 64,
                progress: bool = True) -> np.ndarray:
    """One unit-length row per text, from the backbone's encoder, pooled as its catalog row says.

    Raises:
        BackboneError: the backbone is unknown or its package is missing.
    """
    # lazy: torch is imported only when an encoder is exported or run in PyTorch
    from aiforge.hub.text_encoder import TextEncoder, load_tokenizer

    bb = get_backbone(backbone)
    tok = load_tokenizer(bb.path() / "tokenizer.json", max_length)
    encoder = TextEncoder(bb)
    with progress_bar(len(texts), "embed items", enabled=progress) as advance:
        emb = encoder.embed(tok, texts, on_batch=advance)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True) + 1e-9
    return emb.astype(np.float32)

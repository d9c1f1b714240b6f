"""The PyTorch text classifier: the hub's MiniLM encoder (mean pooling + L2) with a trained head,
and the graph exported to ONNX (ids and mask in, probabilities out)."""

from __future__ import annotations

import torch
from torch import nn

from aiforge.hub.text_encoder import TextEncoder

__all__ = ["TextClassifier"]


def make_head(kind: str, dim: int, n_labels: int, *, dropout: float = 0.1) -> nn.Module:
    """A linear or one-hidden-layer MLP head."""
    if kind == "linear":
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, n_labels))
    return nn.Sequential(
        nn.Dropout(dropout), nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * dim, n_labels)
    )


class TextClassifier(nn.Module):
    """Encoder and head; ``forward`` gives logits, ``probabilities`` the softmax."""

    def __init__(self, encoder: TextEncoder, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                targets: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of the served classes; with ``targets`` (training a margin head), of all trained classes."""
        pooled = self.encoder(input_ids, attention_mask)
        return self.head(pooled) if targets is None else self.head(pooled, targets)  # type: ignore[no-any-return]


class ProbabilityGraph(nn.Module):
    """What is exported to ONNX: token ids and mask in, class probabilities out (and, with ``features``,
    the pooled encoder output too: out-of-scope scoring reads it)."""

    def __init__(self, model: TextClassifier, *, features: bool = False) -> None:
        super().__init__()
        self.model = model
        self.features = features

    def forward(self, input_ids: torch.Tensor,
                attention_mask: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        pooled = self.model.encoder(input_ids, attention_mask)
        probs = torch.softmax(self.model.head(pooled), dim=-1)
        return (probs, pooled) if self.features else probs

"""What a text fit produces: the fitted classifier (predict, evaluate) and ``TextFitResult``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tokenizers import Tokenizer

from aiforge.audit.baseline import BaselineReport
from aiforge.audit.metrics import Metrics, classification_metrics
from aiforge.errors import InputError
from aiforge.hub.catalog import Backbone
from aiforge.hub.text_encoder import iter_batches
from aiforge.tasks.text.data import TextDataset, TextSplits, check_test_labels
from aiforge.tasks.text.model import TextClassifier
from aiforge.tasks.text.spec import AppSpec

if TYPE_CHECKING:
    from aiforge.tasks.text.out_of_scope import OutOfScopeFit

__all__ = ["FittedTextClassifier", "TextFitResult"]


@dataclass
class TextFitResult:
    """Everything a fit produced: the model, its scores, and how long it took."""

    fitted: FittedTextClassifier
    splits: TextSplits
    validation: Metrics
    test: Metrics | None
    train_seconds: float
    history: list[dict[str, float | str]] = field(default_factory=list)
    baseline: BaselineReport | None = None  # the model against its simple baselines (tasks/text/baseline.py)
    out_of_scope: OutOfScopeFit | None = None  # model.out_of_scope: scorer, threshold, what it measured


class FittedTextClassifier:
    """A trained encoder + head that predicts and evaluates in PyTorch (export.py exports it)."""

    def __init__(self, model: TextClassifier, tokenizer: Tokenizer, *, labels: list[str],
                 backbone: Backbone, max_length: int, spec: AppSpec) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.labels = labels
        self.backbone = backbone
        self.max_length = max_length
        self.spec = spec

    @torch.inference_mode()
    def predict_proba(self, texts: list[str], *, batch_size: int = 64) -> np.ndarray:
        """Class probabilities, one row per text, columns in ``labels`` order.

        Raises:
            InputError: ``texts`` is not a list of strings.
        """
        _check_texts(texts)
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        for idx, ids, mask in iter_batches(self.tokenizer, texts, batch_size):
            out[idx] = torch.softmax(self.model(ids, mask), dim=-1).numpy()
        return out

    def features(self, texts: list[str]) -> np.ndarray:
        """The pooled encoder features (L2 norm x FEATURE_SCALE) the head reads, one row per text."""
        return self.model.encoder.embed(self.tokenizer, texts)

    def predict(self, items: list[Any]) -> list[dict[str, Any]]:
        """Label, its probability and all class probabilities for each text."""
        probs = self.predict_proba(items)
        return [
            {"label": self.labels[int(p.argmax())], "score": float(p.max()),
             "scores": {y: float(v) for y, v in zip(self.labels, p, strict=True)}}
            for p in probs
        ]

    def evaluate(self, dataset: TextDataset) -> Metrics:
        """Metrics of this model on ``dataset`` (its labels must be known).

        Raises:
            DataError: ``dataset`` holds a label never seen in training.
        """
        check_test_labels(dataset, self.labels)
        return classification_metrics(dataset.labels, self.predict_proba(dataset.texts), self.labels)



def _check_texts(texts: object) -> None:
    if not isinstance(texts, list | tuple) or not all(isinstance(t, str) for t in texts):
        raise InputError("predict() takes a list of strings.")

"""Text classification / intent detection on a pre-trained sentence encoder.

Two modes:
- ``head``: the encoder is frozen; features are computed once and a head is trained on them.
- ``full``: the head is first trained as in ``head`` (a linear probe), then encoder and head
  are fine-tuned together with the shared loop (LP-FT, which keeps the pre-trained features
  from being distorted by a random head early on).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import torch
from tokenizers import Tokenizer

from aiforge.audit.metrics import classification_metrics, macro_f1
from aiforge.bundle.parts import ExportResult, export_bundle
from aiforge.bundle.registry import Registry
from aiforge.hub.catalog import get_backbone
from aiforge.hub.text_encoder import TextEncoder, iter_batches, load_tokenizer
from aiforge.progress import progress_bar
from aiforge.spec import BaseSpec
from aiforge.tables import baseline_summary, metrics_table, per_class_table
from aiforge.tasks.base import check_spec, parity_line
from aiforge.tasks.text.baseline import text_baselines
from aiforge.tasks.text.data import TextDataset, TextSplits, check_test_labels, load_text_splits
from aiforge.tasks.text.export import write_text_bundle
from aiforge.tasks.text.fitted import FittedTextClassifier, TextFitResult
from aiforge.tasks.text.margin import (
    CosineHead,
    balanced_batches,
    epoch_batches,
    margin_contrastive_loss,
    synthetic_outliers,
)
from aiforge.tasks.text.model import TextClassifier, make_head
from aiforge.tasks.text.out_of_scope import fit_out_of_scope, in_scope_splits
from aiforge.tasks.text.spec import MARGIN_OBJECTIVES, TextSpec, TrainSpec
from aiforge.train.loop import Batch, LoopConfig, LoopResult, fit_loop, seed_everything

if TYPE_CHECKING:
    from rich.console import RenderableType

__all__ = ["TextClassificationTask", "TrainPlan", "plan_training"]


@dataclass(frozen=True)
class TrainPlan:
    """Training settings after mode-dependent defaults are filled in."""

    head_epochs: int
    head_batch_size: int
    head_lr: float
    head_patience: int
    full_epochs: int
    full_batch_size: int
    lr: float
    full_head_lr: float
    full_patience: int
    weight_decay: float
    warmup_ratio: float
    label_smoothing: float


def plan_training(t: TrainSpec, mode: str, objective: str = "cross-entropy") -> TrainPlan:
    """Fill unset training options with defaults measured to work on BANKING77 (bench/banking77.py; the
    margin objective's from bench/intents_oos.py: its cosine head's unit rows move little at 5e-4)."""
    full = mode == "full"
    margin = objective in MARGIN_OBJECTIVES
    return TrainPlan(
        head_epochs=t.epochs if (t.epochs and not full) else 60,
        head_batch_size=t.batch_size if (t.batch_size and not full) else 64,
        head_lr=t.head_lr if (t.head_lr and not full) else 2e-3,
        head_patience=t.patience if (t.patience and not full) else 10,
        full_epochs=t.epochs or 4,
        full_batch_size=t.batch_size or 32,
        lr=t.lr or (1e-4 if margin else 5e-5),
        full_head_lr=t.head_lr or (1e-2 if margin else 5e-4),
        full_patience=t.patience or 2,
        weight_decay=t.weight_decay,
        warmup_ratio=t.warmup_ratio,
        label_smoothing=t.label_smoothing if t.label_smoothing is not None else (0.0 if margin else 0.1),
    )


class TextClassificationTask:
    """Fit a text classifier as the spec says."""

    name = "text-classification"

    def fit(self, spec: BaseSpec, *, progress: bool = True) -> TextFitResult:
        """Load data, adapt the backbone, and score on validation and test.

        Raises:
            DataError: a data check failed.
            BackboneError: the backbone is unknown or its package is missing.
        """
        spec = check_spec(spec, TextSpec)
        seed_everything(spec.train.seed)
        torch.set_num_threads(spec.train.threads or os.cpu_count() or 1)
        oos_spec = spec.model.out_of_scope
        splits = load_text_splits(spec.data, seed=spec.train.seed,
                                  out_of_scope=oos_spec.label if oos_spec is not None else None)
        oos_rows: dict[str, TextDataset | None] = {}
        if oos_spec is not None:  # out-of-scope rows are not a class: they calibrate and are scored
            splits, oos_rows = in_scope_splits(splits, oos_spec)
        backbone = get_backbone(spec.model.backbone)
        plan = plan_training(spec.train, spec.model.mode, spec.model.objective)
        tokenizer = load_tokenizer(backbone.path() / "tokenizer.json", spec.model.max_length)
        encoder = TextEncoder(backbone)
        labels = splits.labels
        index = {y: i for i, y in enumerate(labels)}
        margin = spec.model.objective in MARGIN_OBJECTIVES
        share = oos_spec.synthetic_outliers if oos_spec is not None else 0.0
        # outliers train as one extra class after the served ones (margin head only; the spec checks it)
        outliers = synthetic_outliers(splits.train.texts, [index[y] for y in splits.train.labels],
                                      int(share * len(splits.train)), seed=spec.train.seed) if share else []
        train_texts = [*splits.train.texts, *outliers]
        y_train = torch.tensor([index[y] for y in splits.train.labels] + [len(labels)] * len(outliers))
        y_val = [index[y] for y in splits.validation.labels]
        head = CosineHead(encoder.dim, len(labels), margin=spec.model.margin, extra=1 if outliers else 0) \
            if margin else make_head(spec.model.head, encoder.dim, len(labels))
        model = TextClassifier(encoder, head)
        start = time.perf_counter()

        feats = {}
        with progress_bar(len(train_texts) + len(splits.validation), "embed", enabled=progress) as advance:
            for part, texts in (("train", train_texts), ("validation", splits.validation.texts)):
                feats[part] = torch.from_numpy(encoder.embed(tokenizer, texts, on_batch=advance))
        if isinstance(head, CosineHead):
            head.init_from(feats["train"], y_train)
        history = self._fit_head(model, feats, y_train, y_val, plan, spec.train.seed, progress, margin).history
        if spec.model.mode == "full":
            history += self._fit_full(model, tokenizer, train_texts, splits, y_train, y_val, plan,
                                      spec.train.seed, progress, margin, spec=spec).history
        train_seconds = time.perf_counter() - start

        fitted = FittedTextClassifier(model, tokenizer, labels=labels, backbone=backbone,
                                      max_length=spec.model.max_length, spec=spec)
        validation = fitted.evaluate(splits.validation)
        test, test_scores = None, None
        if splits.test is not None:
            check_test_labels(splits.test, labels)
            proba = fitted.predict_proba(splits.test.texts)
            test = classification_metrics(splits.test.labels, proba, labels)
            test_scores = (proba.argmax(axis=1) == [index[y] for y in splits.test.labels]).astype(float)
        baseline = text_baselines(splits, model_validation=validation.accuracy,
                                  model_test=test.accuracy if test else None, model_test_scores=test_scores,
                                  fit_seconds=train_seconds, seed=spec.train.seed, enabled=spec.baseline)
        oos_fit = None if oos_spec is None else fit_out_of_scope(
            oos_spec, labels=labels, features=fitted.features, splits=splits, oos=oos_rows,
            probs=fitted.predict_proba)
        return TextFitResult(fitted, splits, validation, test, train_seconds, history, baseline,
                             out_of_scope=oos_fit)

    def export(self, spec: BaseSpec, result: TextFitResult, registry: Registry) -> ExportResult:
        """Export to ONNX (fp32 + gated int8), check parity, write metrics and card, register.

        Raises:
            ExportError: export failed or fp32 parity did not hold.
        """
        spec = check_spec(spec, TextSpec)
        return export_bundle(registry, spec, partial(write_text_bundle, spec=spec, result=result))

    def summarize(self, result: TextFitResult, exported: ExportResult) -> list[RenderableType]:
        """Metrics table, hardest classes and the parity line, for ``aiforge train``."""
        test = result.test.to_dict() if result.test else None
        parity = parity_line(exported.parity)
        return [metrics_table(f"{exported.record.name}: trained in {result.train_seconds:.0f} s",
                              {"validation": result.validation.to_dict(), "test": test}),
                per_class_table(test or result.validation.to_dict()), *baseline_summary(result.baseline), parity]

    @staticmethod
    def _fit_head(model: TextClassifier, feats: dict[str, torch.Tensor], y_train: torch.Tensor,
                  y_val: list[int], plan: TrainPlan, seed: int, progress: bool, margin: bool) -> LoopResult:
        x_train, x_val = feats["train"], feats["validation"]
        bs = plan.head_batch_size
        steps = (len(x_train) + bs - 1) // bs

        def batches(epoch: int) -> list[Batch]:
            g = torch.Generator().manual_seed(seed * 1000 + epoch)
            perm = torch.randperm(len(x_train), generator=g)
            # the margin head takes the targets as its second input
            return [((x_train[perm[i:i + bs]], *((y_train[perm[i:i + bs]],) if margin else ())),
                     y_train[perm[i:i + bs]]) for i in range(0, len(perm), bs)]

        y_val_t = torch.tensor(y_val)

        @torch.inference_mode()
        def validate() -> tuple[float, float]:
            logits = model.head(x_val)
            return macro_f1(y_val, logits.argmax(dim=1).numpy()), _nll(logits, y_val_t)

        cfg = LoopConfig(epochs=plan.head_epochs, weight_decay=plan.weight_decay, warmup_ratio=plan.warmup_ratio,
                         label_smoothing=plan.label_smoothing, patience=plan.head_patience, description="head")
        groups: list[dict[str, object]] = [{"params": list(model.head.parameters()), "lr": plan.head_lr}]
        return fit_loop(model.head, groups, batches, steps, validate, cfg, progress=progress)

    @staticmethod
    def _fit_full(model: TextClassifier, tokenizer: Tokenizer, texts: list[str], splits: TextSplits,
                  y_train: torch.Tensor, y_val: list[int], plan: TrainPlan, seed: int, progress: bool,
                  margin: bool, *, spec: TextSpec) -> LoopResult:
        bs = plan.full_batch_size
        steps = (len(texts) + bs - 1) // bs
        seqs = [e.ids for e in tokenizer.encode_batch(texts)]  # token ids once
        contrastive = spec.model.objective == "margin-contrastive"
        per = 4  # examples of a label in a contrastive batch: each has 3 positives to be pulled to
        if contrastive:
            groups_of = sum(-(-int(n) // per) for n in torch.bincount(y_train) if n)
            steps = -(-groups_of // max(1, bs // per))

        def batches(epoch: int) -> list[Batch]:
            if contrastive:
                return balanced_batches(seqs, y_train, labels_per_batch=max(1, bs // per), per_label=per,
                                        seed=seed * 1000 + epoch)
            return epoch_batches(seqs, y_train, bs, seed=seed * 1000 + epoch, with_targets=margin)

        @torch.inference_mode()
        def validate() -> tuple[float, float]:
            logits = torch.zeros(len(splits.validation), len(splits.labels))
            for idx, ids, mask in iter_batches(tokenizer, splits.validation.texts, 128):
                logits[torch.from_numpy(idx)] = model(ids, mask)
            return macro_f1(y_val, logits.argmax(dim=1).numpy()), _nll(logits, torch.tensor(y_val))

        cfg = LoopConfig(epochs=plan.full_epochs, weight_decay=plan.weight_decay, warmup_ratio=plan.warmup_ratio,
                         label_smoothing=plan.label_smoothing, patience=plan.full_patience, description="fine-tune")
        groups: list[dict[str, object]] = [
            {"params": list(model.encoder.parameters()), "lr": plan.lr},
            {"params": list(model.head.parameters()), "lr": plan.full_head_lr},
        ]
        loss = margin_contrastive_loss(weight=spec.model.contrastive_weight,
                                       temperature=spec.model.contrastive_temperature) if contrastive else None
        return fit_loop(model, groups, batches, steps, validate, cfg, progress=progress, loss=loss)


def _nll(logits: torch.Tensor, targets: torch.Tensor) -> float:
    return float(torch.nn.functional.cross_entropy(logits, targets))

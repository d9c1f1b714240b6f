"""One training loop for every PyTorch task: AdamW, warm-up, early stopping, seeds."""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from aiforge.progress import progress_bar

__all__ = ["Batch", "LoopConfig", "LoopResult", "fit_loop", "seed_everything"]

# (model inputs, integer targets)
Batch = tuple[tuple[torch.Tensor, ...], torch.Tensor]


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch so a run can be repeated."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@dataclass(frozen=True)
class LoopConfig:
    """Optimiser, schedule and stopping rule."""

    epochs: int
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    label_smoothing: float = 0.0
    patience: int = 3
    max_grad_norm: float = 1.0
    description: str = "train"


@dataclass
class LoopResult:
    """What the loop did: best validation score, its epoch, the score history, time."""

    best_score: float
    best_epoch: int
    epochs_run: int
    history: list[dict[str, float | str]] = field(default_factory=list)
    seconds: float = 0.0


def fit_loop(
    model: nn.Module,
    param_groups: list[dict[str, object]],
    batches: Callable[[int], Iterable[Batch]],
    steps_per_epoch: int,
    validate: Callable[[], tuple[float, float]],
    config: LoopConfig,
    *,
    progress: bool = True,
    loss: Callable[[nn.Module, tuple[torch.Tensor, ...], torch.Tensor], torch.Tensor] | None = None,
) -> LoopResult:
    """Train ``model`` with AdamW and linear warm-up/decay; keep the best validated weights.

    ``batches(epoch)`` yields that epoch's batches; ``validate()`` returns
    ``(macro_f1, loss)`` on validation data: the best epoch has the highest macro-F1, ties
    broken by the lower loss (small validation sets tie often). Training stops after
    ``patience`` epochs without improvement and the model keeps the best weights seen.
    ``loss(model, inputs, targets)``, when given, replaces cross-entropy on ``model(*inputs)``.
    """
    optimizer = torch.optim.AdamW(param_groups, weight_decay=config.weight_decay)  # type: ignore[arg-type]
    total = max(1, config.epochs * steps_per_epoch)
    warmup = int(total * config.warmup_ratio)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    best = (-math.inf, -math.inf)
    best_state: dict[str, torch.Tensor] | None = None
    result = LoopResult(best_score=-math.inf, best_epoch=0, epochs_run=0)
    start = time.perf_counter()
    with progress_bar(total, config.description, enabled=progress) as advance:
        for epoch in range(config.epochs):
            model.train()
            running, seen = 0.0, 0
            for inputs, targets in batches(epoch):
                value = loss_fn(model(*inputs), targets) if loss is None else loss(model, inputs, targets)
                optimizer.zero_grad(set_to_none=True)
                value.backward()  # type: ignore[no-untyped-call]
                nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                running += value.item() * len(targets)
                seen += len(targets)
                advance(1, info=f"epoch {epoch + 1}/{config.epochs} loss {running / max(seen, 1):.3f}")
            model.eval()
            f1, val_loss = validate()
            result.history.append({"phase": config.description, "epoch": epoch + 1,
                                   "loss": running / max(seen, 1), "val_macro_f1": f1, "val_loss": val_loss})
            result.epochs_run = epoch + 1
            if (f1, -val_loss) > best:
                best, result.best_epoch = (f1, -val_loss), epoch + 1
                best_state = copy.deepcopy(model.state_dict())
            elif epoch + 1 - result.best_epoch >= config.patience:
                skipped = steps_per_epoch * (config.epochs - epoch - 1)
                advance(skipped, info=f"early stop, best epoch {result.best_epoch}")
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    result.best_score = best[0]
    result.seconds = time.perf_counter() - start
    return result

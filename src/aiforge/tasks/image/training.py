"""The training core of image classification: cached features, the head, full fine-tuning.

Imports only torch, numpy, Pillow, the backbone packages and aiforge's vision and loop
modules (no pydantic), so a bare GPU machine can run it (``bench/vision.py --only full``).

- ``fit_head``: pooled features are computed once (no augmentation); a head is trained on
  them with the shared loop (:func:`aiforge.train.loop.fit_loop`).
- ``fit_full``: after the head (a linear probe, LP-FT), the last ``unfreeze`` stages (or all)
  are fine-tuned on augmented images with discriminative learning rates: each earlier stage
  gets ``lr_decay`` x the next one's rate. Frozen stages keep BatchNorm in eval mode. If no
  fine-tuned epoch beats the linear probe on validation, the probe's weights are kept.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from aiforge.audit.metrics import macro_f1
from aiforge.progress import progress_bar
from aiforge.tasks.image.dataset import ImageDataset
from aiforge.tasks.image.model import ImageClassifier, stages
from aiforge.tasks.image.preprocess import AugmentConfig, ImageConfig, augment, preprocess_batch
from aiforge.train.loop import Batch, LoopConfig, LoopResult, fit_loop

__all__ = ["FullConfig", "HeadConfig", "extract_features", "fit_full", "fit_head", "pick_device"]


def pick_device(choice: str) -> torch.device:
    """``cuda`` when asked for or (``auto``) available, else ``cpu``.

    Raises:
        ValueError: ``cuda`` was asked for but is not available.
    """
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device is 'cuda' but PyTorch sees no CUDA device; use 'auto' or 'cpu'.")
    return torch.device("cuda" if choice != "cpu" and torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class HeadConfig:
    """Head training on cached features."""

    epochs: int = 30
    batch_size: int = 256
    lr: float = 3e-3
    patience: int = 5
    label_smoothing: float = 0.1
    seed: int = 0


@dataclass(frozen=True)
class FullConfig:
    """Fine-tuning: epochs, batch, rates per stage, augmentation, stopping."""

    epochs: int = 5
    batch_size: int = 64
    lr: float = 5e-4
    head_lr: float = 1e-3
    lr_decay: float = 0.7
    unfreeze: int | None = None  # None: every stage
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    label_smoothing: float = 0.1
    patience: int = 2
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@torch.inference_mode()
def extract_features(model: ImageClassifier, ds: ImageDataset, image: ImageConfig, *, progress: bool = True,
                     batch_size: int = 256, description: str = "features") -> torch.Tensor:
    """Pooled backbone features of every image (n, 1280), on the CPU."""
    device = next(model.parameters()).device
    model.eval()
    out = torch.zeros(len(ds), model.net._bn1.num_features)
    with progress_bar(len(ds), description, enabled=progress) as advance:
        for start in range(0, len(ds), batch_size):
            stop = min(start + batch_size, len(ds))
            x = torch.from_numpy(preprocess_batch([ds.image(i) for i in range(start, stop)], image))
            out[start:stop] = model.features(x.to(device)).float().cpu()
            advance(stop - start)
    return out


def _nll(logits: torch.Tensor, targets: torch.Tensor) -> float:
    return float(nn.functional.cross_entropy(logits, targets))


def fit_head(model: ImageClassifier, x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor,
             y_val: list[int], cfg: HeadConfig, *, progress: bool = True) -> LoopResult:
    """Train ``model.head`` on cached features; keep the best validated weights."""
    device = next(model.parameters()).device
    x_train, x_val = x_train.to(device), x_val.to(device)
    y_dev, y_val_t = y_train.to(device), torch.tensor(y_val, device=device)
    bs = cfg.batch_size
    steps = (len(x_train) + bs - 1) // bs

    def batches(epoch: int) -> list[Batch]:
        g = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        perm = torch.randperm(len(x_train), generator=g).to(device)
        return [((x_train[perm[i:i + bs]],), y_dev[perm[i:i + bs]]) for i in range(0, len(perm), bs)]

    @torch.inference_mode()
    def validate() -> tuple[float, float]:
        logits = model.head(x_val)
        return macro_f1(y_val, logits.argmax(dim=1).cpu().numpy()), _nll(logits, y_val_t)

    loop = LoopConfig(epochs=cfg.epochs, warmup_ratio=0.05, label_smoothing=cfg.label_smoothing,
                      patience=cfg.patience, description="head")
    groups: list[dict[str, object]] = [{"params": list(model.head.parameters()), "lr": cfg.lr}]
    return fit_loop(model.head, groups, batches, steps, validate, loop, progress=progress)


class PartlyFrozen(nn.Module):
    """The classifier with some modules frozen; frozen ones stay in eval mode (BatchNorm statistics fixed)."""

    def __init__(self, model: ImageClassifier, frozen: list[nn.Module]) -> None:
        super().__init__()
        self.model = model
        self.frozen = frozen
        for module in frozen:
            module.requires_grad_(False)

    def train(self, mode: bool = True) -> PartlyFrozen:
        super().train(mode)
        for module in self.frozen:
            module.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model(x)
        return out


@torch.inference_mode()
def _logits(model: ImageClassifier, ds: ImageDataset, image: ImageConfig, n_classes: int) -> torch.Tensor:
    device = next(model.parameters()).device
    out = torch.zeros(len(ds), n_classes, device=device)
    for start in range(0, len(ds), 256):
        stop = min(start + 256, len(ds))
        x = torch.from_numpy(preprocess_batch([ds.image(i) for i in range(start, stop)], image))
        out[start:stop] = model(x.to(device)).float()
    return out


def fit_full(model: ImageClassifier, train: ImageDataset, y_train: torch.Tensor, validation: ImageDataset,
             y_val: list[int], image: ImageConfig, cfg: FullConfig, *, n_classes: int,
             progress: bool = True) -> LoopResult:
    """Fine-tune the last ``cfg.unfreeze`` stages (all when None) and the head on augmented images."""
    device = next(model.parameters()).device
    groups_net = stages(model.net)
    n_train = len(groups_net) if cfg.unfreeze is None else min(cfg.unfreeze, len(groups_net))
    frozen = [m for g in groups_net[:len(groups_net) - n_train] for m in g]
    for group in groups_net[len(groups_net) - n_train:]:
        for module in group:
            for bn in module.modules():
                if isinstance(bn, nn.BatchNorm2d):
                    # the TF port keeps momentum 0.01: running statistics would lag the batch
                    # statistics the weights adapt to for hundreds of steps
                    bn.momentum = 0.1
    wrapper = PartlyFrozen(model, frozen)
    bs = cfg.batch_size
    steps = (len(train) + bs - 1) // bs

    def batches(epoch: int) -> Iterator[Batch]:
        rng = np.random.default_rng(cfg.seed * 1000 + epoch)
        perm = rng.permutation(len(train))
        for i in range(0, len(perm), bs):
            idx = perm[i:i + bs]
            x = np.stack([augment(train.image(int(j)), image, cfg.augment, rng) for j in idx])
            yield (torch.from_numpy(x).to(device, non_blocking=True),), y_train[idx].to(device)

    y_val_t = torch.tensor(y_val, device=device)

    def validate() -> tuple[float, float]:
        logits = _logits(model, validation, image, n_classes)
        return macro_f1(y_val, logits.argmax(dim=1).cpu().numpy()), _nll(logits, y_val_t)

    param_groups: list[dict[str, object]] = []
    for depth, group in enumerate(reversed(groups_net[len(groups_net) - n_train:])):  # last stage fastest
        param_groups.append({"params": [p for m in group for p in m.parameters()],
                             "lr": cfg.lr * cfg.lr_decay ** depth})
    param_groups.append({"params": list(model.head.parameters()), "lr": cfg.head_lr})
    loop = LoopConfig(epochs=cfg.epochs, weight_decay=cfg.weight_decay, warmup_ratio=cfg.warmup_ratio,
                      label_smoothing=cfg.label_smoothing, patience=cfg.patience, description="fine-tune")
    model.eval()
    probe_f1, probe_loss = validate()  # the linear probe's score: fine-tuning must beat it to be kept
    probe_state = copy.deepcopy(model.state_dict())
    try:
        result = fit_loop(wrapper, param_groups, batches, steps, validate, loop, progress=progress)
    finally:
        for module in frozen:
            module.requires_grad_(True)
    best_loss = float(result.history[result.best_epoch - 1]["val_loss"])
    if (result.best_score, -best_loss) < (probe_f1, -probe_loss):
        model.load_state_dict(probe_state)
        result.history.append({"phase": "fine-tune", "epoch": 0, "loss": float("nan"), "val_macro_f1": probe_f1,
                               "val_loss": probe_loss, "kept": "linear probe (fine-tuning did not beat it)"})
    model.eval()
    return result

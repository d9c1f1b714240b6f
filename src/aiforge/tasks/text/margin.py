"""The large-margin cosine objective (LMCL / CosFace) for fine-tuning an intent encoder, and the
synthetic outliers it can be trained to reject.

Cross-entropy on a linear head only asks the right class to win; the cosine head with an additive
margin (Wang et al., 2018; used for unknown-intent detection by Lin & Xu, 2019) asks every example
to sit within ``cos >= m`` of its class's direction more than of any other: classes become compact
and separated, so a query of an intent nobody trained lands far from all of them and its top cosine
(or its distance to the nearest training example) says so. At inference the head is plain
``scale * cos``; the margin is applied in training only, to the target class.

Outlier exposure (Hendrycks et al., 2019) without outside data: ``synthetic_outliers`` splices the
first half of an example of one label onto the second half of an example of another. Such texts
are certainly not one intent; they are trained as one extra class that is never served.

``supervised_contrastive`` (Khosla et al., 2020; with a margin head, as KNN-contrastive learning for
out-of-domain intents, Zhou et al., 2022) pulls each example towards the other examples of its intent in
the batch and away from every other one; ``balanced_batches`` draws batches of a few examples of a few
intents, so every example has positives to be pulled to.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from aiforge.bundle.tokens import pad_rows

__all__ = ["CosineHead", "balanced_batches", "epoch_batches", "margin_contrastive_loss", "supervised_contrastive",
           "synthetic_outliers"]


class CosineHead(nn.Module):
    """``scale * cos(x, w_c)`` for every class ``c``; in training, ``margin`` is taken off the target's cosine.

    ``extra`` classes after the ``n_labels`` served ones (the synthetic-outlier class) are trained but
    cut from the logits given without targets, so exported graphs and predictions never see them.
    """

    def __init__(self, dim: int, n_labels: int, *, scale: float = 30.0, margin: float = 0.35,
                 extra: int = 0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_labels + extra, dim) * 0.01)
        self.scale = scale
        self.margin = margin
        self.served = n_labels

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        cos = nn.functional.normalize(x, dim=1) @ nn.functional.normalize(self.weight, dim=1).T
        if targets is None:
            return self.scale * cos[:, :self.served]
        if self.training:
            cos = cos - self.margin * nn.functional.one_hot(targets, cos.shape[1]).to(cos.dtype)
        return self.scale * cos

    def init_from(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Start each class's direction at the mean of its (frozen-encoder) features: a linear probe for free."""
        with torch.no_grad():
            for c in range(self.weight.shape[0]):
                rows = y == c
                if rows.any():
                    self.weight[c] = nn.functional.normalize(x[rows].mean(dim=0), dim=0)


def synthetic_outliers(texts: Sequence[str], labels: Sequence[int], n: int, *, seed: int) -> list[str]:
    """``n`` texts spliced from the first half of one label's example and the second half of another's."""
    rng = np.random.default_rng(seed)
    y = np.asarray(labels)
    words = [t.split() for t in texts]
    out: list[str] = []
    for _ in range(50 * n):
        if len(out) >= n:
            break
        i, j = (int(k) for k in rng.integers(0, len(texts), size=2))
        if y[i] == y[j] or len(words[i]) < 2 or len(words[j]) < 2:
            continue
        a, b = words[i], words[j]
        out.append(" ".join(a[:len(a) // 2] + b[len(b) // 2:]))
    return out


def epoch_batches(seqs: Sequence[Sequence[int]], targets: torch.Tensor, batch_size: int, *, seed: int,
                  with_targets: bool = False) -> list[tuple[tuple[torch.Tensor, ...], torch.Tensor]]:
    """One epoch of padded token batches: shuffled, sorted by length within chunks of 50 batches (little
    padding, labels still mixed), the batch order shuffled again. ``with_targets`` also passes the targets
    as the model's third input (the margin head needs them)."""
    rng = np.random.default_rng(seed)
    lengths = np.array([len(s) for s in seqs])
    perm = rng.permutation(len(seqs))
    chunk = batch_size * 50
    order = np.concatenate([perm[i:i + chunk][np.argsort(lengths[perm[i:i + chunk]], kind="stable")]
                            for i in range(0, len(perm), chunk)])
    out: list[tuple[tuple[torch.Tensor, ...], torch.Tensor]] = []
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        ids, mask = pad_rows(seqs, idx)
        y = targets[idx]
        inputs = (torch.from_numpy(ids), torch.from_numpy(mask), *((y,) if with_targets else ()))
        out.append((inputs, y))
    return [out[j] for j in rng.permutation(len(out))]


def supervised_contrastive(features: torch.Tensor, targets: torch.Tensor, *, temperature: float = 0.1) -> torch.Tensor:
    """Mean over anchors with a positive of ``-log`` of the softmax mass (over the batch, self excluded, at
    ``cos / temperature``) that falls on the anchor's own label."""
    z = nn.functional.normalize(features, dim=1)
    sim = z @ z.T / temperature
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, -1e9)
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    positive = (targets[:, None] == targets[None, :]) & ~eye
    count = positive.sum(dim=1)
    has = count > 0
    if not bool(has.any()):
        return features.sum() * 0.0
    mean_pos = (log_prob * positive).sum(dim=1)[has] / count[has]
    return -mean_pos.mean()


def margin_contrastive_loss(*, weight: float = 1.0, temperature: float = 0.1
                            ) -> Callable[[nn.Module, tuple[torch.Tensor, ...], torch.Tensor], torch.Tensor]:
    """The loss ``fit_loop`` takes for a ``TextClassifier`` with a ``CosineHead``: the margin head's
    cross-entropy plus ``weight`` times ``supervised_contrastive`` on the same pooled features."""

    def loss(model: nn.Module, inputs: tuple[torch.Tensor, ...], targets: torch.Tensor) -> torch.Tensor:
        pooled = model.encoder(inputs[0], inputs[1])  # type: ignore[operator]
        logits = model.head(pooled, targets)  # type: ignore[operator]
        return nn.functional.cross_entropy(logits, targets) + weight * supervised_contrastive(
            pooled, targets, temperature=temperature)

    return loss


def balanced_batches(seqs: Sequence[Sequence[int]], targets: torch.Tensor, *, labels_per_batch: int,
                     per_label: int, seed: int) -> list[tuple[tuple[torch.Tensor, ...], torch.Tensor]]:
    """One epoch of padded batches of ``per_label`` examples of each of ``labels_per_batch`` labels: every
    example once (each label's examples shuffled and cut into groups, the groups dealt into batches at random;
    targets passed as the third input, as the margin head needs them)."""
    rng = np.random.default_rng(seed)
    y = targets.numpy()
    groups: list[np.ndarray] = []
    for c in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == c))
        groups.extend(rows[i:i + per_label] for i in range(0, len(rows), per_label))
    order = rng.permutation(len(groups))
    out: list[tuple[tuple[torch.Tensor, ...], torch.Tensor]] = []
    for i in range(0, len(order), labels_per_batch):
        idx = np.concatenate([groups[j] for j in order[i:i + labels_per_batch]])
        ids, mask = pad_rows(seqs, idx)
        t = targets[idx]
        out.append(((torch.from_numpy(ids), torch.from_numpy(mask), t), t))
    return out

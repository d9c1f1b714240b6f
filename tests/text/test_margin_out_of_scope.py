"""The open-intent recipe of ``model.out_of_scope`` (``objective: margin``, ``method: nearest``): an encoder
fine-tuned with a large-margin cosine head on 6 BANKING77 intents rejects queries of 2 intents it never saw
(no out-of-scope examples given) and keeps known ones, in PyTorch and in the exported ONNX bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from banking_helpers import read_rows, write_rows

from aiforge import App
from aiforge.app import load
from aiforge.bundle.out_of_scope import NearestScorer
from aiforge.tasks.text.margin import (
    CosineHead,
    balanced_batches,
    margin_contrastive_loss,
    supervised_contrastive,
    synthetic_outliers,
)
from aiforge.tasks.text.spec import AppSpec
from aiforge.train.loop import LoopConfig, fit_loop

UNSEEN = 2


@pytest.fixture(scope="module")
def margin_bundle(small_banking: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], list[str]]:
    train, test = read_rows(small_banking / "train.csv"), read_rows(small_banking / "test.csv")
    labels = sorted({r["category"] for r in train})
    known, unseen = labels[:-UNSEEN], set(labels[-UNSEEN:])
    folder = tmp_path_factory.mktemp("margin-data")
    write_rows(folder / "train.csv", [r for r in train if r["category"] in known])
    write_rows(folder / "test.csv", [r for r in test if r["category"] in known])
    raw = {"name": "bank-open", "task": "text-classification",
           "data": {"train": str(folder / "train.csv"), "test": str(folder / "test.csv"), "label_column": "category",
                    "validation_fraction": 0.25},
           "model": {"mode": "full", "objective": "margin", "max_length": 32,
                     "out_of_scope": {"method": "nearest", "target_in_scope_recall": 0.9,
                                      "synthetic_outliers": 0.2}},
           "train": {"epochs": 2, "seed": 0}, "optimize": {"quantize": False, "parity_samples": 64}}
    app = App(AppSpec.from_dict(raw), home=tmp_path_factory.mktemp("margin-home"))
    app.fit(progress=False)
    known_test = [r["text"] for r in test if r["category"] in known]
    return Path(app.export().path), known_test, [r["text"] for r in test if r["category"] in unseen]


# fine-tunes the encoder (about a minute on 2 cores): make test-heavy, like the other end-to-end fits over a minute
@pytest.mark.heavy
def test_unseen_intents_are_rejected_and_known_ones_kept(margin_bundle: tuple[Path, list[str], list[str]]) -> None:
    path, known_texts, unseen_texts = margin_bundle
    rt = load(path)
    assert rt.labels[-1] == "out_of_scope"
    unseen = [p.label for p in rt.predict(unseen_texts)]
    known = [p.label for p in rt.predict(known_texts)]
    recall = unseen.count("out_of_scope") / len(unseen)
    kept = 1 - known.count("out_of_scope") / len(known)
    assert recall >= 0.5, unseen
    assert kept >= 0.75, known
    metrics = json.loads((path / "metrics.json").read_text(encoding="utf-8"))["out_of_scope"]
    assert metrics["method"] == "nearest" and metrics["test"]["in_scope_accuracy"] >= 0.6, metrics
    assert (path / "oos_examples.npy").is_file()
    card = (path / "card.md").read_text(encoding="utf-8")
    assert "nearest training example" in card


# one fine-tuning epoch on 72 rows, no export: 163 s at load 8 beside a training job (idle: well under that)
@pytest.mark.slow
@pytest.mark.parametrize("objective", ["margin", "margin-contrastive"])
def test_the_recipe_in_memory_rejects_an_unseen_intent_and_keeps_a_known_one(small_banking: Path, tmp_path: Path,
                                                                            objective: str) -> None:
    """The measured recipe (margin head fine-tuned, ``method: nearest``, keep 95% of validation) on 4 intents,
    one short epoch, scored in memory with the fitted scorer and threshold the bundle would serve."""
    train, test = read_rows(small_banking / "train.csv"), read_rows(small_banking / "test.csv")
    labels = sorted({r["category"] for r in train})
    known, unseen = labels[:4], labels[-1]
    write_rows(tmp_path / "train.csv", [r for r in train if r["category"] in known])
    write_rows(tmp_path / "test.csv", [r for r in test if r["category"] in known])
    raw = {"name": "bank-open-fast", "task": "text-classification",
           "data": {"train": str(tmp_path / "train.csv"), "test": str(tmp_path / "test.csv"),
                    "label_column": "category", "validation_fraction": 0.25},
           "model": {"mode": "full", "objective": objective, "max_length": 24,
                     "out_of_scope": {"method": "nearest", "target_in_scope_recall": 0.95}},
           "train": {"epochs": 1, "seed": 0}}
    fit = App(AppSpec.from_dict(raw), home=tmp_path / "home").fit(progress=False)
    oos = fit.out_of_scope
    assert oos is not None and isinstance(oos.scorer, NearestScorer)
    known_texts = [r["text"] for r in test if r["category"] in known]
    unseen_texts = [r["text"] for r in test if r["category"] == unseen]
    rejected_known = oos.scorer.score(fit.fitted.features(known_texts)) > oos.threshold
    rejected_unseen = oos.scorer.score(fit.fitted.features(unseen_texts)) > oos.threshold
    assert rejected_unseen.mean() >= 0.5, (unseen, rejected_unseen)
    assert rejected_known.mean() <= 0.25, rejected_known
    assert oos.metrics["test"]["in_scope_accuracy"] >= 0.6, oos.metrics


def test_cosine_head_applies_the_margin_only_in_training_and_never_serves_the_outlier_class() -> None:
    head = CosineHead(4, 3, scale=10.0, margin=0.5, extra=1)
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 0])
    assert head(x).shape == (5, 3)  # served classes only
    head.train()
    trained = head(x, y)
    head.eval()
    plain = head(x, y)
    assert trained.shape == plain.shape == (5, 4)
    diff = (plain - trained).detach().numpy()
    assert np.allclose(diff[np.arange(5), y.numpy()], 5.0, atol=1e-5)  # scale * margin on the target only
    diff[np.arange(5), y.numpy()] = 0
    assert np.allclose(diff, 0)


def test_synthetic_outliers_splice_two_different_labels() -> None:
    texts = ["card arrived late today", "top up failed twice", "exchange rate looks wrong"]
    out = synthetic_outliers(texts, [0, 1, 2], 20, seed=0)
    assert len(out) == 20 and out == synthetic_outliers(texts, [0, 1, 2], 20, seed=0)
    assert not set(out) & set(texts)
    assert synthetic_outliers(texts, [0, 0, 0], 5, seed=0) == []  # one label: nothing to splice


def test_nearest_scorer_is_one_minus_the_best_cosine() -> None:
    scorer = NearestScorer.fit(np.array([[2.0, 0.0], [0.0, 3.0]]))
    s = scorer.score(np.array([[1.0, 0.0], [1.0, 1.0], [-1.0, 0.0]]))
    assert np.allclose(s, [0.0, 1 - np.sqrt(0.5), 1.0], atol=1e-6)


def test_supervised_contrastive_is_low_when_each_label_is_tight_and_apart() -> None:
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    tight = torch.eye(3).repeat_interleave(2, dim=0) + 0.01 * torch.randn(6, 3)
    mixed = torch.eye(3)[torch.tensor([0, 1, 2, 0, 1, 2])]  # each example's positive points elsewhere
    assert float(supervised_contrastive(tight, y)) < 0.05 < 2.0 < float(supervised_contrastive(mixed, y))
    lone = supervised_contrastive(torch.randn(3, 4, requires_grad=True), torch.tensor([0, 1, 2]))
    assert lone.item() == 0.0 and lone.requires_grad  # no anchor has a positive: nothing to pull


def test_balanced_batches_hold_every_row_once_in_groups_of_a_label() -> None:
    targets = torch.tensor([0] * 9 + [1] * 8 + [2] * 7)
    seqs = [[5] * (1 + i % 4) for i in range(len(targets))]
    batches = balanced_batches(seqs, targets, labels_per_batch=2, per_label=4, seed=3)
    seen = torch.cat([b[1] for b in batches])
    assert sorted(seen.tolist()) == sorted(targets.tolist())
    for (ids, mask, t), y in batches:
        assert torch.equal(t, y) and ids.shape == mask.shape and ids.shape[0] == len(y)
        assert len(y) <= 8 and len(torch.unique(y)) <= 2  # two groups of at most 4 rows of one label each


def test_fit_loop_trains_with_the_margin_contrastive_loss() -> None:
    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = torch.nn.EmbeddingBag(10, 8)
            self.head = CosineHead(8, 2, margin=0.35)

        def encoder(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return self.embedding(ids, per_sample_weights=None) * 1.0

    torch.manual_seed(0)
    model = Tiny()
    y = torch.tensor([0, 1, 0, 1])  # one positive an anchor: the contrastive term can fall towards 0
    ids = torch.where(y[:, None] == 0, torch.tensor([1, 2, 3]), torch.tensor([6, 7, 8]))
    batch = ((ids, torch.ones_like(ids), y), y)
    loss = margin_contrastive_loss(weight=1.0, temperature=0.1)
    before = loss(model, batch[0], y).item()
    fit_loop(model, [{"params": list(model.parameters()), "lr": 0.05}], lambda e: [batch], 1,
             lambda: (0.0, 0.0), LoopConfig(epochs=20, warmup_ratio=0.0, patience=20), progress=False, loss=loss)
    assert loss(model, batch[0], y).item() < 0.5 * before


def test_the_contrastive_objective_needs_full_mode() -> None:
    from pydantic import ValidationError

    from aiforge.tasks.text.spec import ModelSpec

    with pytest.raises(ValidationError, match="margin-contrastive shapes the encoder"):
        ModelSpec(objective="margin-contrastive")
    assert ModelSpec(objective="margin-contrastive", mode="full").contrastive_temperature == 0.1

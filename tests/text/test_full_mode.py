"""Training behaviour: full fine-tuning (LP-FT) and seeded reproducibility, on real BANKING77 data."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiforge import App
from aiforge.tasks.text.spec import AppSpec


@pytest.mark.slow
def test_full_mode_fine_tunes_the_encoder(small_banking: Path, make_head_spec, tmp_path: Path) -> None:
    import torch

    from aiforge.hub import get_backbone
    from aiforge.hub.text_encoder import TextEncoder

    raw = make_head_spec(small_banking, name="bank8-full", data={"max_per_label": 12},
                         model={"mode": "full"}, train={"epochs": 1, "batch_size": 16})
    app = App(AppSpec.from_dict(raw), home=tmp_path)

    result = app.fit(progress=False)

    assert result.test is not None
    assert result.test.n == 80
    assert result.test.accuracy > 0.5  # chance is 1/8
    assert len(result.splits.train) + len(result.splits.validation) == 8 * 12
    # the head's linear probe (epochs 1..N), then one fine-tune epoch numbered from 1 again
    epochs = [h["epoch"] for h in result.history]
    assert len(epochs) >= 2
    assert epochs.count(1) == 2
    assert epochs[-1] == 1
    assert all(k in result.history[-1] for k in ("loss", "val_macro_f1", "val_loss"))
    # the encoder's weights moved away from the pre-trained ones
    pretrained = TextEncoder(get_backbone("minilm-l6")).state_dict()
    tuned = result.fitted.model.encoder.state_dict()
    assert set(pretrained) == set(tuned)
    assert any(not torch.equal(pretrained[k], tuned[k]) for k in pretrained)


def test_same_seed_gives_identical_fits(small_banking: Path, make_head_spec, tmp_path: Path) -> None:
    raw = make_head_spec(small_banking, name="bank8-repro", data={"max_per_label": 6}, train={"epochs": 15})
    spec = AppSpec.from_dict(raw)

    first = App(spec, home=tmp_path).fit(progress=False)
    second = App(spec, home=tmp_path).fit(progress=False)

    assert first.splits.validation.texts == second.splits.validation.texts
    assert first.validation.to_dict() == second.validation.to_dict()
    assert first.test is not None
    assert second.test is not None
    assert first.test.to_dict() == second.test.to_dict()
    assert first.history == second.history
    assert len(first.history) >= 1

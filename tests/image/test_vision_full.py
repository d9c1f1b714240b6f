"""Full mode: the last stages are fine-tuned with discriminative rates; earlier ones stay frozen."""

from __future__ import annotations

import pytest
import torch
from vision_helpers import image_spec

from aiforge import App
from aiforge.hub.catalog import get_backbone
from aiforge.spec import BaseSpec
from aiforge.tasks.image.model import load_efficientnet, stages

pytestmark = pytest.mark.slow


def _same(a: list[torch.nn.Module], b: list[torch.nn.Module]) -> bool:
    sa = [t for m in a for t in m.state_dict().values()]
    sb = [t for m in b for t in m.state_dict().values()]
    return all(torch.equal(x.cpu(), y) for x, y in zip(sa, sb, strict=True))


def test_full_mode_trains_only_the_unfrozen_stages(tmp_path) -> None:
    spec = BaseSpec.from_dict(image_spec(
        "fashion-full", model={"mode": "full", "unfreeze": 2},
        train={"epochs": 3, "head_epochs": 20, "batch_size": 12, "lr": 2e-4, "lr_decay": 0.5},
        optimize={"quantize": False}, report={"enabled": False}))
    app = App(spec, home=tmp_path)
    result = app.fit(progress=False)
    phases = [h["phase"] for h in result.history]
    assert phases[0] == "head" and "fine-tune" in phases, result.history
    tuned, original = stages(result.fitted.model.net), stages(load_efficientnet(get_backbone("efficientnet-lite0"), 32))
    assert all(_same(n, o) for n, o in zip(tuned[:-2], original[:-2], strict=True))  # frozen, BatchNorm stats too
    if "kept" in result.history[-1]:  # no fine-tuned epoch beat the linear probe: its weights are back
        assert _same(tuned[-1], original[-1]) and _same(tuned[-2], original[-2])
    else:
        assert not _same(tuned[-1], original[-1]) and not _same(tuned[-2], original[-2])
    assert all(p.requires_grad for p in result.fitted.model.parameters())
    assert result.test is not None and result.test.accuracy > 0.4  # chance is 0.25
    assert app.export().parity.details["fp32_ok"]

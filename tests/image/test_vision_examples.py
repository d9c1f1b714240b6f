"""The shipped image examples: valid specs, real data, and a small slice that trains end to end."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiforge import App
from aiforge.spec import load_spec
from aiforge.tasks.image.samples import FASHION_MNIST_LABELS
from aiforge.tasks.image.spec import ImageSpec

REPO = Path(__file__).resolve().parents[2]


def test_fashion_mnist_example_is_valid_and_its_data_exists() -> None:
    spec = load_spec(REPO / "examples" / "fashion-mnist" / "aiforge.yaml")
    assert isinstance(spec, ImageSpec) and spec.data is not None
    assert spec.data.label_names == FASHION_MNIST_LABELS
    for path in (spec.data.train, spec.data.train_labels, spec.data.test, spec.data.test_labels):
        assert path is not None and path.is_file(), path


def test_zero_shot_example_is_valid() -> None:
    spec = load_spec(REPO / "examples" / "imagenet-zero-shot" / "aiforge.yaml")
    assert isinstance(spec, ImageSpec) and spec.effective_mode == "zero-shot"


@pytest.mark.slow
def test_fashion_mnist_example_runs_on_a_slice(tmp_path: Path) -> None:
    spec = load_spec(REPO / "examples" / "fashion-mnist" / "aiforge.yaml")
    assert isinstance(spec, ImageSpec) and spec.data is not None
    small = spec.model_copy(update={
        "data": spec.data.model_copy(update={"max_per_class": 8, "max_test_per_class": 4,
                                             "validation_fraction": 0.25}),
        "model": spec.model.model_copy(update={"resolution": 32}),
        "optimize": spec.optimize.model_copy(update={"quantize": False, "parity_samples": 20}),
        "report": spec.report.model_copy(update={"mistakes": 2, "gradcam": 2}),
    })
    app = App(small, home=tmp_path)
    result = app.fit(progress=False)
    exported = app.export()
    assert result.test is not None and result.test.n == 40
    assert result.test.accuracy > 0.3  # 10 classes from 6 images each: well above chance (0.1)
    lines = app.task.summarize(result, exported)
    assert "ONNX fp32 vs PyTorch" in str(lines[-1])

"""Image data readers and checks, Fashion-MNIST samples and the image spec (no model needed)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from vision_helpers import encode

from aiforge.errors import DataError, SpecError
from aiforge.spec import BaseSpec
from aiforge.tasks.image.data import load_image_dataset, load_image_splits
from aiforge.tasks.image.samples import FASHION_MNIST_LABELS, fashion_mnist_paths, load_fashion_mnist
from aiforge.tasks.image.spec import ImageSpec

rng = np.random.default_rng(0)


def _img(w: int = 20, h: int = 20, gray: bool = False) -> bytes:
    shape = (h, w) if gray else (h, w, 3)
    return encode(rng.integers(0, 256, shape, dtype=np.uint8))


def _folder(root: Path, counts: dict[str, int]) -> Path:
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True)
        for k in range(n):
            (root / cls / f"{k}.png").write_bytes(_img(20 + k, 30, gray=k % 2 == 0))  # mixed sizes and modes
    return root


def test_folder_reader_mixed_sizes_and_grayscale(tmp_path: Path) -> None:
    ds = load_image_dataset(_folder(tmp_path / "d", {"cat": 3, "dog": 4}))
    assert ds.labels == ["cat"] * 3 + ["dog"] * 4
    assert {ds.image(i).size for i in range(len(ds))} == {(20 + k, 30) for k in range(4)}
    assert ds.names is not None and ds.names[0].endswith("cat/0.png")


def test_csv_reader_resolves_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    rows = []
    for k in range(4):
        (tmp_path / "img" / f"{k}.png").write_bytes(_img())
        rows.append({"file": f"img/{k}.png", "kind": "a" if k < 2 else "b"})
    with (tmp_path / "list.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["file", "kind"])
        writer.writeheader()
        writer.writerows(rows)
    ds = load_image_dataset(tmp_path / "list.csv", path_column="file", label_column="kind")
    assert ds.labels == ["a", "a", "b", "b"]
    expected = r"column 'path' not found. Columns are \['file', 'kind'\]. Set data.path_column"
    with pytest.raises(DataError, match=expected):
        load_image_dataset(tmp_path / "list.csv")


def test_truncated_image_is_named_by_path(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d", {"a": 2, "b": 2})
    bad = root / "b" / "1.png"
    bad.write_bytes(bad.read_bytes()[:60])
    with pytest.raises(DataError, match=r"b/1\.png: PNG image is (truncated|corrupt)"):
        load_image_dataset(root)


def test_not_an_image_is_named_by_path(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d", {"a": 2, "b": 2})
    (root / "a" / "notes.png").write_text("hello")
    with pytest.raises(DataError, match=r"notes\.png: not a JPEG, PNG or WebP image"):
        load_image_dataset(root)


def test_class_with_too_few_images(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d", {"a": 5, "b": 1})
    spec = ImageSpec.model_validate({"name": "x", "data": {"train": str(root), "min_per_class": 3}})
    assert spec.data is not None
    with pytest.raises(DataError, match=r"fewer than 3 images: \{'b': 1\}.*data.min_per_class"):
        load_image_splits(spec.data, seed=0)


def test_empty_folder_and_missing_labels(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        load_image_dataset(tmp_path / "empty")
    images, _ = fashion_mnist_paths("test")
    with pytest.raises(DataError, match="IDX images need their labels file"):
        load_image_dataset(images)


def test_idx_reader_on_the_real_fashion_mnist() -> None:
    images, labels = load_fashion_mnist("test")
    assert images.shape == (10_000, 28, 28) and images.dtype == np.uint8
    assert len(labels) == 10_000 and set(labels) == set(FASHION_MNIST_LABELS)
    img_path, lab_path = fashion_mnist_paths("train")
    ds = load_image_dataset(img_path, labels_path=lab_path, label_names=FASHION_MNIST_LABELS)
    assert len(ds) == 60_000 and ds.image(0).size == (28, 28)


def test_idx_images_and_labels_must_agree(tmp_path: Path) -> None:
    img_path, _ = fashion_mnist_paths("test")
    _, train_labels = fashion_mnist_paths("train")
    with pytest.raises(DataError, match=r"10000 images but .* has 60000 labels"):
        load_image_dataset(img_path, labels_path=train_labels)
    junk = tmp_path / "junk-idx3-ubyte"
    junk.write_bytes(b"\x00\x00\x08\x03" + (5).to_bytes(4, "big") * 3 + b"\x00" * 7)
    with pytest.raises(DataError, match="IDX header says"):
        load_image_dataset(junk, labels_path=junk)


def test_missing_fashion_mnist_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist_paths("train", directory=tmp_path)


def test_splits_cap_per_class_and_hold_out_validation(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d", {"a": 8, "b": 8, "c": 8})
    spec = ImageSpec.model_validate({"name": "x", "data": {"train": str(root), "max_per_class": 6,
                                                           "validation_fraction": 0.2}})
    assert spec.data is not None
    splits = load_image_splits(spec.data, seed=0)
    assert splits.labels == ["a", "b", "c"]
    assert len(splits.train) + len(splits.validation) == 18
    assert sorted(set(splits.validation.labels)) == ["a", "b", "c"]


def test_spec_defaults_and_zero_shot() -> None:
    spec = BaseSpec.from_dict({"name": "imagenet", "task": "image-classification"})
    assert isinstance(spec, ImageSpec)
    assert spec.effective_mode == "zero-shot" and spec.model.resolution == 224
    assert spec.serve.max_body_bytes == 16 << 20  # photos are larger than the text default


@pytest.mark.parametrize(("raw", "message"), [
    ({"model": {"mode": "head"}}, "needs a data block"),
    ({"model": {"resolutoin": 64}}, "unknown key 'model.resolutoin'. Did you mean 'resolution'?"),
    ({"model": {"resolution": 8}}, "model.resolution"),
    ({"model": {"unfreeze": 12}}, "model.unfreeze must be 'all' or a number of stages from 1 to 9"),
    ({"train": {"device": "tpu"}}, "train.device"),
    ({"data": {"train": "x", "tset": "y"}}, "Did you mean 'test'?"),
])
def test_spec_errors_name_the_key(raw: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        BaseSpec.from_dict({"name": "x", "task": "image-classification", **raw})

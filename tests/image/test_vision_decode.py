"""Safe decoding and the one preprocessing implementation (no model needed)."""

from __future__ import annotations

import base64
import time

import numpy as np
import pytest
from PIL import Image
from vision_helpers import bomb_png, encode, exif_rotated_png

from aiforge.errors import DataError, InputError
from aiforge.tasks.image.decode import decode_base64, decode_image, open_image_file
from aiforge.tasks.image.preprocess import (
    MAX_ASPECT_RATIO,
    AugmentConfig,
    ImageConfig,
    augment,
    preprocess,
    resized_size,
    to_rgb,
)

LIMITS = {"max_bytes": 8 << 20, "max_pixels": 40_000_000}


def _photo(w: int = 90, h: int = 60) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_allowed_formats_decode(fmt: str) -> None:
    img = decode_image(encode(_photo(), fmt), where="x", **LIMITS)
    assert img.size == (90, 60)


@pytest.mark.parametrize(("fmt", "named"), [("GIF", "a GIF"), ("BMP", "a BMP"), ("TIFF", "a TIFF")])
def test_other_formats_are_refused_by_magic_bytes(fmt: str, named: str) -> None:
    with pytest.raises(InputError, match=f"items\\[0\\]: not a JPEG, PNG or WebP image \\(got {named}\\)"):
        decode_image(encode(_photo(), fmt), where="items[0]", **LIMITS)


def test_text_pretending_to_be_an_image_is_refused() -> None:
    with pytest.raises(InputError, match="not a JPEG, PNG or WebP"):
        decode_image(b"<html>hello</html>", where="f", **LIMITS)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image_is_named(fmt: str) -> None:
    data = encode(_photo(300, 200), fmt)
    with pytest.raises(InputError, match=f"f: {fmt} image is (truncated|corrupt)"):
        decode_image(data[: len(data) // 2], where="f", **LIMITS)


def test_bomb_is_refused_before_decoding() -> None:
    bomb = bomb_png(12_000, 12_000)  # 144 M pixels, 432 MB decoded, a few hundred KB on the wire
    assert len(bomb) < 1_000_000
    with pytest.raises(InputError, match=r"12000x12000 = 144000000 pixels, over the limit of 40000000 \(refused"):
        decode_image(bomb, where="f", **LIMITS)
    huge = bomb_png(20_000, 20_000)  # over Pillow's own guard too: still our error type
    with pytest.raises(InputError, match="refused before decoding"):
        decode_image(huge, where="f", max_bytes=8 << 20, max_pixels=10**9)


@pytest.mark.parametrize(("width", "height"), [(100_000, 1), (1, 100_000), (1_000_000, 1), (2100, 100)])
def test_wide_and_tall_strips_are_refused_before_decoding(width: int, height: int) -> None:
    # Issue 16, item 3: a 177-byte 100000x1 PNG took 14 s and 1.7 GB (the shorter side resized to 256
    # makes 25.6 million x 256 pixels); a 1 KB 1000000x1 PNG ran out of memory.
    strip = bomb_png(width, height)
    assert len(strip) < 5_000
    started = time.perf_counter()
    with pytest.raises(InputError, match=rf"^f: image of {width}x{height} has an aspect ratio over the limit of "
                                         rf"{MAX_ASPECT_RATIO}:1; crop or pad it"):
        decode_image(strip, where="f", **LIMITS)
    assert time.perf_counter() - started < 0.5


def test_preprocess_bounds_the_resized_size_before_any_resize() -> None:
    cfg = ImageConfig.for_resolution(224)
    with pytest.raises(InputError, match=rf"items\[2\]: image of 100000x1 has an aspect ratio over the limit of "
                                         rf"{MAX_ASPECT_RATIO}:1"):
        preprocess(Image.new("RGB", (100_000, 1)), cfg, where="items[2]")
    # at the limit: decoded and resized to at most MAX_ASPECT_RATIO * resize**2 pixels
    edge = (MAX_ASPECT_RATIO * 10, 10)
    assert decode_image(encode(_photo(*edge)), where="f", **LIMITS).size == edge
    assert resized_size(*edge, cfg) == (MAX_ASPECT_RATIO * cfg.resize, cfg.resize)
    assert preprocess(_photo(*edge), cfg).shape == (3, 224, 224)
    assert resized_size(640, 480, cfg) == (341, 256)  # ordinary photos resize as before


def test_byte_limit() -> None:
    data = encode(_photo(), "PNG")
    with pytest.raises(InputError, match=f"image of {len(data)} bytes, over the limit of 100"):
        decode_image(data, where="f", max_bytes=100, max_pixels=10**8)


def test_base64_errors_and_data_urls() -> None:
    data = encode(_photo(), "PNG")
    text = base64.b64encode(data).decode()
    assert decode_base64(text, where="x", max_bytes=1 << 20) == data
    assert decode_base64("data:image/png;base64," + text, where="x", max_bytes=1 << 20) == data
    with pytest.raises(InputError, match="x: not valid base64"):
        decode_base64("not*base64!", where="x", max_bytes=1 << 20)
    with pytest.raises(InputError, match="over the limit of 100"):
        decode_base64(text, where="x", max_bytes=100)
    with pytest.raises(InputError, match="expected a base64-encoded image string, got int"):
        decode_base64(7, where="x", max_bytes=100)  # type: ignore[arg-type]


def test_exif_orientation_is_applied() -> None:
    upright = _photo(90, 60)
    img = decode_image(exif_rotated_png(upright), where="f", **LIMITS)
    assert img.size == (90, 60)
    assert np.array_equal(np.asarray(img), np.asarray(upright))


def test_grayscale_palette_and_alpha_become_rgb() -> None:
    gray = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8))
    rgb = np.asarray(to_rgb(gray))
    assert rgb.shape == (8, 8, 3)
    assert np.array_equal(rgb[..., 0], rgb[..., 2])
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))  # fully transparent: white background
    assert np.asarray(to_rgb(rgba)).min() == 255
    assert to_rgb(gray.convert("P")).mode == "RGB"


def test_preprocess_shape_range_and_mixed_sizes() -> None:
    cfg = ImageConfig.for_resolution(224)
    assert (cfg.resize, cfg.resolution) == (256, 224)
    for size in ((640, 480), (100, 300), (28, 28)):
        x = preprocess(_photo(*size), cfg)
        assert x.shape == (3, 224, 224) and x.dtype == np.float32
        assert x.min() >= -1.0 and x.max() <= 1.0
    white = preprocess(Image.new("RGB", (50, 50), (255, 255, 255)), cfg)
    assert np.allclose(white, 1.0)


def test_augment_differs_by_seed_but_keeps_the_scale() -> None:
    cfg, aug = ImageConfig.for_resolution(32, crop_fraction=1.0), AugmentConfig()
    a = augment(_photo(), cfg, aug, np.random.default_rng(1))
    b = augment(_photo(), cfg, aug, np.random.default_rng(2))
    assert a.shape == b.shape == (3, 32, 32)
    assert not np.array_equal(a, b)
    assert a.min() >= -1.0 and a.max() <= 1.0


def test_training_reader_and_server_decoder_give_identical_tensors(tmp_path) -> None:
    """The file a training set reads and the same bytes uploaded to a server become the same tensor."""
    from aiforge.tasks.image.data import load_image_dataset

    cfg = ImageConfig.for_resolution(64)
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for k in range(2):
            (tmp_path / cls / f"{k}.jpg").write_bytes(encode(_photo(120 + k, 80), "JPEG", quality=90))
    ds = load_image_dataset(tmp_path)
    for i, name in enumerate(ds.names or []):
        training = preprocess(ds.image(i), cfg)
        with open(name, "rb") as fh:
            served = preprocess(decode_image(fh.read(), where="upload", **LIMITS), cfg)
        assert np.array_equal(training, served)


def test_unreadable_file_is_named(tmp_path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(encode(_photo(), "PNG")[:100])
    with pytest.raises(DataError, match=r"broken\.png: PNG image is (truncated|corrupt)"):
        open_image_file(bad)

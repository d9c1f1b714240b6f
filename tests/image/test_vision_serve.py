"""Serving an image bundle over real HTTP (``aiforge serve`` on 127.0.0.1): uploads, base64, v2,
and every bad-image case answered with a 4xx JSON error, never a 500."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from vision_helpers import CLASSES, bomb_png, encode, exif_rotated_png, trained_images

from aiforge.serve.benchmark import rss_mb
from serve_helpers import RunningServer, metric_samples, serving
from wrong_kind import KindRoute, check_wrong_kind, routes_for_other_kinds

pytestmark = pytest.mark.slow
NAME = "fashion4"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    trained = trained_images()
    log = tmp_path_factory.mktemp("vision-serve") / "server.log"
    with serving(trained.export.path, trained.home, log) as running:
        yield running


@pytest.fixture(scope="module")
def pngs() -> list[bytes]:
    root = trained_images().data / "test"
    return [next((root / c).glob("*.png")).read_bytes() for c in CLASSES]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _classify_files(server: RunningServer, files: list[tuple[str, bytes]], **data: Any) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/models/{NAME}/classify", timeout=60, data=data,
                      files=[("files", (name, blob, "application/octet-stream")) for name, blob in files])


def test_multipart_upload(server: RunningServer, pngs: list[bytes]) -> None:
    r = _classify_files(server, [(f"{i}.png", b) for i, b in enumerate(pngs)], top_k="2")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == NAME and len(body["predictions"]) == len(pngs)
    first = body["predictions"][0]
    assert first["image"] == "0.png" and first["label"] in CLASSES and len(first["top"]) == 2
    assert first["top"][0] == {"label": first["label"], "score": first["score"]}


def test_base64_json_and_v1_and_v2_agree(server: RunningServer, pngs: list[bytes]) -> None:
    multipart = _classify_files(server, [("a.png", pngs[0])]).json()["predictions"][0]
    js = httpx.post(f"{server.url}/v1/models/{NAME}/classify", json={"images": [_b64(pngs[0])]}, timeout=60)
    assert js.status_code == 200, js.text
    assert js.json()["predictions"][0]["score"] == pytest.approx(multipart["score"], abs=1e-6)
    v1 = httpx.post(f"{server.url}/v1/models/{NAME}/predict", json={"inputs": [_b64(pngs[0])]}, timeout=60)
    assert v1.status_code == 200 and v1.json()["predictions"][0]["label"] == multipart["label"]
    v2 = httpx.post(f"{server.url}/v2/models/{NAME}/infer", timeout=60, json={"inputs": [
        {"name": "image", "shape": [2], "datatype": "BYTES", "data": [_b64(pngs[0]), _b64(pngs[1])]}]})
    assert v2.status_code == 200, v2.text
    labels = next(o for o in v2.json()["outputs"] if o["name"] == "label")
    assert labels["data"][0] == multipart["label"] and labels["shape"] == [2]
    meta = httpx.get(f"{server.url}/v2/models/{NAME}", timeout=10).json()
    assert meta["inputs"][0]["datatype"] == "BYTES" and meta["inputs"][0]["parameters"]["content_type"] == "base64"


def test_exif_orientation_is_honoured(server: RunningServer, pngs: list[bytes]) -> None:
    upright = Image.open(__import__("io").BytesIO(pngs[0])).convert("RGB")
    r = _classify_files(server, [("up.png", encode(upright)), ("exif.png", exif_rotated_png(upright)),
                                 ("raw-rotated.png", encode(upright.transpose(Image.Transpose.ROTATE_90)))])
    a, b, c = (p["top"] for p in r.json()["predictions"])
    assert a == b  # EXIF says how to turn the stored pixels: same input after decoding
    assert a != c  # the same rotation without the tag is a different input


def _gif() -> bytes:
    return encode(np.zeros((20, 20, 3), np.uint8), "GIF")


BAD_UPLOADS = {
    "gif": (_gif, 422, "not a JPEG, PNG or WebP image (got a GIF)"),
    "text": (lambda: b"hello, I am not an image", 422, "not a JPEG, PNG or WebP image"),
    "empty": (lambda: b"", 422, "empty image"),
    "truncated": (lambda: encode(np.random.default_rng(0).integers(0, 256, (200, 200, 3), np.uint8))[:3000], 422,
                  "PNG image is"),
    "bomb": (lambda: bomb_png(12_000, 12_000), 422, "12000x12000 = 144000000 pixels, over the limit of 40000000"),
    "too-many-bytes": (lambda: encode(np.random.default_rng(1).integers(0, 256, (1800, 1800, 3), np.uint8)), 422,
                       "over the limit of 8388608 bytes"),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_bad_uploads_get_a_4xx_naming_the_problem(server: RunningServer, case: str) -> None:
    make, status, message = BAD_UPLOADS[case]
    r = _classify_files(server, [("bad.img", make())])
    assert r.status_code == status, r.text
    assert message in r.json()["error"]
    assert "files[0]" in r.json()["error"]


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"images": ["not*base64!"]}, 422, "images[0]: not valid base64"),
    ({"images": [_b64(b"GIF89a....")]}, 422, "images[0]: not a JPEG, PNG or WebP image (got a GIF)"),
    ({"images": [12]}, 422, "images[0]: expected a base64-encoded JPEG/PNG/WebP image string, got int"),
    ({"images": []}, 422, "at least one input is required"),
    ({"imgs": []}, 422, 'expected {"images"'),
    ({"images": ["x"], "colour": 1}, 422, "unknown field(s) ['colour']"),
    ({"images": ["x"], "top_k": "many"}, 422, "top_k: expected a positive integer"),
    ({"images": ["x"], "top_k": 0}, 422, "top_k: expected a positive integer"),
])
def test_bad_json_bodies(server: RunningServer, body: dict[str, Any], status: int, message: str) -> None:
    r = httpx.post(f"{server.url}/v1/models/{NAME}/classify", json=body, timeout=60)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


@pytest.mark.parametrize(("body", "status", "message"), [
    ('{"images": ' + "[" * 10_000 + "]" * 10_000 + "}", 400, "request body: JSON nested too deeply"),
    ('{"images": ["x"], "top_k": ' + "9" * 5000 + "}", 400,
     "request body: JSON value refused (Exceeds the limit (4300 digits)"),
    ('{"images": [' + "[" * 100 + "]" * 100 + "]}", 400, "request body: nested more than 32 levels deep"),
    ('{"images": ["x"], "top_k": Infinity}', 400, "numbers must be finite"),
    ('{"images": ["\\ud800"]}', 422, "images[0]: not valid Unicode text: lone surrogate U+D800"),
], ids=["deep", "5000-digits", "nested-32", "infinity", "surrogate"])
def test_unparseable_json_is_a_4xx_json_error_not_a_500(server: RunningServer, body: str, status: int,
                                                        message: str) -> None:
    # Issue 16, item 8: the first two answered 500 (RecursionError, ValueError from json.loads).
    r = httpx.post(f"{server.url}/v1/models/{NAME}/classify", content=body.encode(),
                   headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == status, r.text[:300]
    assert r.headers["content-type"].startswith("application/json")
    assert message in r.json()["error"], r.json()


@pytest.mark.parametrize(("width", "height"), [(100_000, 1), (1, 1_000_000)])
def test_wide_or_tall_strips_are_refused_fast_and_without_memory(server: RunningServer, width: int,
                                                                 height: int) -> None:
    # Issue 16, item 3: a 177-byte 100000x1 PNG took 14 s and 1.7 GB RSS (200 OK); 1000000x1 ran out of memory.
    strip = bomb_png(width, height)
    before = rss_mb(server.proc.pid)
    started = time.perf_counter()
    limit = f"image of {width}x{height} has an aspect ratio over the limit of 20:1"
    r = _classify_files(server, [("strip.png", strip)])
    assert r.status_code == 422 and f"files[0]: {limit}" in r.json()["error"], r.text
    r = httpx.post(f"{server.url}/v1/models/{NAME}/classify", json={"images": [_b64(strip)]}, timeout=60)
    assert r.status_code == 422 and f"images[0]: {limit}" in r.json()["error"], r.text
    assert time.perf_counter() - started < 2.0
    assert rss_mb(server.proc.pid) - before < 50, (before, rss_mb(server.proc.pid))


def test_other_client_mistakes(server: RunningServer, pngs: list[bytes]) -> None:
    url = f"{server.url}/v1/models/{NAME}/classify"
    not_json = httpx.post(url, content=b"{nope", headers={"content-type": "application/json"}, timeout=30)
    assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["error"]
    no_file = httpx.post(url, data={"top_k": "1"}, files={}, timeout=30,
                         headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert no_file.status_code in (400, 422)
    fields_only = httpx.post(url, data={"top_k": "1"}, files=[("note", (None, b"x"))], timeout=30)
    assert fields_only.status_code == 422 and "no image file" in fields_only.json()["error"]
    unknown = httpx.post(f"{server.url}/v1/models/nope/classify", json={"images": [_b64(pngs[0])]}, timeout=30)
    assert unknown.status_code == 404
    huge = httpx.post(url, content=b"0" * (17 << 20), headers={"content-type": "application/json"}, timeout=60)
    assert huge.status_code == 413
    v2_fp32 = httpx.post(f"{server.url}/v2/models/{NAME}/infer", timeout=30, json={"inputs": [
        {"name": "image", "shape": [1], "datatype": "FP32", "data": [1.0]}]})
    assert v2_fp32.status_code == 400 and "datatype must be BYTES" in v2_fp32.json()["error"]
    v2_bad = httpx.post(f"{server.url}/v2/models/{NAME}/infer", timeout=30, json={"inputs": [
        {"name": "image", "shape": [1], "datatype": "BYTES", "data": ["@@@"]}]})
    assert v2_bad.status_code == 422 and "inputs[0].data[0]: not valid base64" in v2_bad.json()["error"]


@pytest.mark.parametrize("route", routes_for_other_kinds("image-classification"))
def test_other_kinds_routes_refuse_an_image_model_with_the_same_400(server: RunningServer, route: KindRoute) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        check_wrong_kind(http, route, name=NAME, served="image-classification")


def test_no_500_was_ever_answered(server: RunningServer) -> None:
    metrics = metric_samples(httpx.get(server.url + "/metrics", timeout=10).text)
    answered = {(dict(labels)["route"], dict(labels)["status"]) for (name, labels), v in metrics.items()
                if name == "aiforge_requests_total" and v > 0}
    assert ("/v1/models/{name}/classify", "422") in answered
    server_errors = {(route, status) for route, status in answered
                     if status.startswith("5") and route != "/v2/health/ready"}  # 503 there while loading
    assert not server_errors, answered
    assert "Traceback" not in server.log_tail(20_000)


def test_metrics_count_items_and_fp32_fallbacks(server: RunningServer, pngs: list[bytes]) -> None:
    r = httpx.post(f"{server.url}/v1/models/{NAME}/classify", json={"images": [_b64(b) for b in pngs]}, timeout=60)
    assert r.status_code == 200
    metrics = metric_samples(httpx.get(server.url + "/metrics", timeout=10).text)
    counts = {dict(labels)["counter"]: v for (name, labels), v in metrics.items()
              if name == "aiforge_runtime_events_total" and dict(labels)["model"] == NAME}
    assert counts["items"] >= len(pngs) and 0 <= counts["fp32_fallback_items"] <= counts["items"]


def test_refused_bomb_leaves_no_memory_behind(server: RunningServer) -> None:
    bomb = bomb_png(12_000, 12_000)  # 432 MB if it were decoded to RGB
    before = rss_mb(server.proc.pid)
    for _ in range(3):
        r = _classify_files(server, [("bomb.png", bomb)])
        assert r.status_code == 422
        r = httpx.post(f"{server.url}/v1/models/{NAME}/classify", json={"images": [_b64(bomb)]}, timeout=60)
        assert r.status_code == 422
    time.sleep(0.2)
    assert rss_mb(server.proc.pid) - before < 50, (before, rss_mb(server.proc.pid))


def test_concurrent_single_image_requests_are_batched(server: RunningServer, pngs: list[bytes]) -> None:
    def one(i: int) -> int:
        return _classify_files(server, [(f"{i}.png", pngs[i % len(pngs)])]).status_code

    before = metric_samples(httpx.get(server.url + "/metrics", timeout=10).text)
    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(one, range(64)))
    assert codes == [200] * 64
    after = metric_samples(httpx.get(server.url + "/metrics", timeout=10).text)
    key = ("aiforge_batch_size_count", (("model", NAME),))
    items = ("aiforge_batch_size_sum", (("model", NAME),))
    batches = after[key] - before.get(key, 0)
    assert after[items] - before.get(items, 0) == 64
    assert batches < 64  # some requests shared a batch


def test_uploaded_file_bytes_are_not_kept_on_disk(server: RunningServer) -> None:
    # multipart files spool to temp files; the route closes the form so they are removed
    import tempfile

    tmp = Path(tempfile.gettempdir())
    before = {p.name for p in tmp.iterdir()}
    big = encode(np.random.default_rng(2).integers(0, 256, (900, 900, 3), np.uint8))  # > 1 MB: spooled to disk
    assert _classify_files(server, [("big.png", big)]).status_code == 200
    leftovers = {p.name for p in tmp.iterdir()} - before
    big_files = [n for n in leftovers if (tmp / n).is_file() and (tmp / n).stat().st_size > 10**6]
    assert not [n for n in big_files if n.startswith("tmp")]

"""Edge packages (``aiforge export NAME --edge -o DIR``): the runner predicts what the server predicts, with
onnxruntime, numpy and tokenizers (Pillow for images) only, and refuses a changed file.

Every run.py is started in a fresh interpreter in isolated mode (``-I``: no PYTHONPATH, no user site, no
script folder on the path) with an environment holding only PATH, so only the venv's site-packages are
visible; the child reports which modules it loaded, and neither aiforge nor torch may be among them.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from aiforge.bundle.edge import build_edge
from aiforge.errors import ExportError
from aiforge.serve.app import create_app
from aiforge.serve.loadgen import free_port

# Runs run.py's main() as __main__ would, then prints the heavy or aiforge modules it loaded.
_CHILD = """
import json, runpy, sys
script, *args = sys.argv[1:]
sys.argv = [script, *args]
try:
    runpy.run_path(script, run_name="__main__")
except SystemExit as exc:
    code = exc.code
else:
    code = 0
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("aiforge", "torch", "transformers", "onnx", "pandas"))
sys.stderr.write("LOADED " + json.dumps(loaded) + "\\n")
sys.exit(code)
"""
TEXTS = ["where is my card?", "I want to top up with Apple Pay", "my card payment was declined twice today"]


def _clean_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}


def _run(package: Path, *args: str) -> tuple[int, list[dict[str, Any]], str, list[str]]:
    proc = subprocess.run([sys.executable, "-I", "-c", _CHILD, str(package / "run.py"), *args],
                          capture_output=True, text=True, timeout=180, env=_clean_env(), cwd=package.parent)
    loaded = next((json.loads(line[7:]) for line in proc.stderr.splitlines() if line.startswith("LOADED ")), None)
    assert loaded is not None, proc.stderr[-2000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    return proc.returncode, rows, proc.stderr, loaded


def _served(bundle: Path, inputs: list[Any]) -> list[dict[str, Any]]:
    with TestClient(create_app([bundle])) as client:
        deadline = time.monotonic() + 60
        while client.get("/v2/health/ready").status_code != 200:
            assert time.monotonic() < deadline, "server not ready within 60 s"
            time.sleep(0.05)
        name = client.get("/v1/models").json()["models"][0]["name"]
        r = client.post(f"/v1/models/{name}/predict", json={"inputs": inputs})
        assert r.status_code == 200, r.text
        preds: list[dict[str, Any]] = r.json()["predictions"]
        return preds


def _same(edge: list[dict[str, Any]], served: list[dict[str, Any]]) -> None:
    assert len(edge) == len(served)
    for e, s in zip(edge, served, strict=True):
        assert e["label"] == s["label"], (e, s)
        assert abs(e["score"] - s["score"]) < 1e-5, (e, s)
        for label, p in e["scores"].items():
            assert abs(p - s["scores"][label]) < 1e-5, (label, e, s)


def test_text_edge_package_predicts_what_the_server_predicts(trained_bundle: Any, tmp_path: Path) -> None:
    bundle = Path(trained_bundle.export.path)
    package = build_edge(bundle, out=tmp_path / "edge")
    assert package.graph == "model.int8.onnx" and "model.onnx" not in package.files  # only the graph it runs
    assert (tmp_path / "edge" / "requirements.txt").read_text().splitlines()[0].startswith("onnxruntime==")
    with zipfile.ZipFile(package.zip) as zf:
        assert {"edge/run.py", "edge/edge.json", "edge/bundle/manifest.json"} <= set(zf.namelist())
    code, rows, err, loaded = _run(package.folder, *TEXTS)
    assert code == 0, err[-2000:]
    assert loaded == [], f"run.py loaded {loaded}"
    _same(rows, _served(bundle, TEXTS))


def test_the_runner_serves_http_and_refuses_bad_input(trained_bundle: Any, tmp_path: Path) -> None:
    package = build_edge(Path(trained_bundle.export.path), out=tmp_path / "edge")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-I", str(package.folder / "run.py"), "--serve", "--port", str(port),
                             "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_clean_env())
    try:
        line = proc.stdout.readline() if proc.stdout else b""
        assert b"serving" in line, (line, proc.stderr.read() if proc.stderr and proc.poll() is not None else b"")
        url = f"http://127.0.0.1:{port}"

        def post(body: bytes) -> tuple[int, dict[str, Any]]:
            req = urllib.request.Request(f"{url}/predict", data=body, headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=60) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as exc:
                return exc.code, json.loads(exc.read())

        status, body = post(json.dumps({"inputs": TEXTS[:2]}).encode())
        assert status == 200 and len(body["predictions"]) == 2
        code, rows, _, _ = _run(package.folder, *TEXTS[:2])
        assert code == 0
        _same(body["predictions"], rows)
        for bad in (b"not json", json.dumps({"inputs": [3]}).encode(), json.dumps({"inputs": []}).encode(),
                    json.dumps({"texts": ["x"]}).encode()):
            status, body = post(bad)
            assert status == 400 and isinstance(body["error"], str), (bad, status, body)
        with urllib.request.urlopen(f"{url}/health", timeout=30) as r:
            assert json.loads(r.read())["ready"] is True
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_runner_refuses_a_changed_file(trained_bundle: Any, tmp_path: Path) -> None:
    package = build_edge(Path(trained_bundle.export.path), out=tmp_path / "edge")
    graph = package.folder / "bundle" / package.graph
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    code, rows, err, _ = _run(package.folder, "hello")
    assert code == 1 and not rows and package.graph in err and "sha256" in err, err[-1000:]
    (package.folder / "bundle" / "extra.txt").write_text("x")
    graph.unlink()
    code, _, err, _ = _run(package.folder, "hello")
    assert code == 1 and "extra.txt" in err, err[-1000:]


def test_image_edge_package_predicts_what_the_server_predicts(tmp_path: Path) -> None:
    from vision_helpers import trained_images

    b = trained_images()
    bundle = Path(b.export.path)
    package = build_edge(bundle, out=tmp_path / "edge")
    assert package.task == "image-classification"
    assert (tmp_path / "edge" / "requirements.txt").read_text().count("pillow==") == 1
    pngs = sorted((b.data / "test").glob("*/*.png"))[::3]
    code, rows, err, loaded = _run(package.folder, *map(str, pngs))
    assert code == 0, err[-2000:]
    assert loaded == [], f"run.py loaded {loaded}"
    _same(rows, _served(bundle, [base64.b64encode(p.read_bytes()).decode() for p in pngs]))


def test_edge_refuses_an_unsupported_kind_and_a_used_folder(german: Any, trained_bundle: Any, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="edge packages run"):
        build_edge(german.path, out=tmp_path / "tab")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("x")
    with pytest.raises(ExportError, match="not an empty folder"):
        build_edge(Path(trained_bundle.export.path), out=tmp_path / "used")

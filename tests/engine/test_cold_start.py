"""What ``aiforge serve`` does before it is ready: the serving stack, not the training API or the data readers.

Start-up time is measured in ``bench/cold_start.py``; these tests keep the heavy modules out of the path, in a
fresh interpreter (the CLI module, the app factory, and loading and warming up a text bundle): the routes of
kinds no served model has are imported on first need; and the background load (``serve/preload.py``) hands
each bundle, or its loading error, to the app.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from aiforge.bundle.runtime import Runtime
from aiforge.errors import AiforgeError
from aiforge.serve.app import create_app
from aiforge.serve.config import ServerConfig
from aiforge.serve.preload import Preload
from serve_helpers import server_env

# Never needed to serve a text bundle: the training stack, the data readers, the spec loader, the HTTP client.
NOT_ON_THE_SERVE_PATH = ["torch", "transformers", "onnx", "sklearn", "pandas", "pyarrow", "yaml", "httpx",
                         "aiforge.app", "aiforge.spec", "aiforge.audit", "aiforge.data",
                         # the routes of the kinds a text bundle is not (included on the first request they match)
                         "aiforge.tasks.chat.routes", "aiforge.tasks.image.routes", "aiforge.tasks.recommend.routes",
                         "aiforge.tasks.driving.routes"]

_CHILD = """
import json, sys
import aiforge.cli
from aiforge.serve.app import create_app
from aiforge.serve.config import ServerConfig
from aiforge.bundle.runtime import Runtime
create_app([sys.argv[1]])
rt = Runtime.load(sys.argv[1], threads=1)
rt.warmup()
print(json.dumps(sorted({m for m in sys.modules for w in json.loads(sys.argv[2]) if m == w or m.startswith(w + ".")})))
"""


def test_the_serve_path_imports_no_training_or_data_modules(trained_bundle: Any) -> None:
    home = Path(trained_bundle.home)
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(trained_bundle.export.path),
                           json.dumps(NOT_ON_THE_SERVE_PATH)], capture_output=True, text=True, timeout=180,
                          env=server_env(home))
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded == [], f"serving a text bundle imported {loaded}"


def _wait_ready(client: TestClient) -> dict[str, Any]:
    for _ in range(600):
        body: dict[str, Any] = client.get("/v2/health/ready").json()
        if body.get("ready") or body.get("errors"):
            return body
        time.sleep(0.05)
    raise AssertionError("the app never finished loading")


def test_preload_hands_each_bundle_or_its_error_to_the_app(trained_bundle: Any, tmp_path: Path) -> None:
    path, home = str(trained_bundle.export.path), trained_bundle.home
    missing = str(tmp_path / "no-such-bundle")
    preload = Preload([path, missing], precision="auto", threads=1, home=home)
    assert preload.take("never-asked") is None
    rt = preload.take(path)
    assert isinstance(rt, Runtime) and rt.name == trained_bundle.name
    with pytest.raises(AiforgeError, match="no-such-bundle"):
        preload.take(missing)
    # the app takes the very Runtime the preload made (no second load) and reports the failure per source
    assert preload.matches(precision="auto", threads=1, home=home)
    app = create_app([path, missing], home=home, preload=preload, config=ServerConfig(threads=1))
    with TestClient(app) as client:
        body = _wait_ready(client)
        assert body["ready"] is False and [e["source"] for e in body["errors"]] == [missing]
        assert app.state.models.services[trained_bundle.name].runtime is rt
        r = client.post(f"/v1/models/{trained_bundle.name}/predict", json={"inputs": ["where is my card?"]})
        assert r.status_code == 200, r.text


def test_a_preload_with_other_settings_is_refused_before_anything_loads_twice(trained_bundle: Any) -> None:
    path, home = str(trained_bundle.export.path), trained_bundle.home
    preload = Preload([path], precision="fp32", threads=1, home=home)
    # the server was asked for the default precision: its work cannot be reused, so the app is not built
    with pytest.raises(AiforgeError, match=r"preload loaded with .*'fp32'.*configured with .*'auto'"):
        create_app([path], home=home, preload=preload, config=ServerConfig(threads=1))
    with pytest.raises(AiforgeError, match="configured with"):
        create_app([path], home=home, preload=preload, config=ServerConfig(threads=2, precision="fp32"))
    # the same settings: taken as loaded
    app = create_app([path], home=home, preload=preload, config=ServerConfig(threads=1, precision="fp32"))
    with TestClient(app) as client:
        assert _wait_ready(client)["ready"] is True
        assert app.state.models.services[trained_bundle.name].runtime is preload.take(path)


def test_deferred_kind_routes_answer_as_if_included(trained_bundle: Any) -> None:
    """The first request to a kind route of a text-only server is routed again once the routes are in."""
    app = create_app([str(trained_bundle.export.path)], home=trained_bundle.home)
    with TestClient(app) as client:
        _wait_ready(client)
        r = client.get("/v1/chat/completions")  # the first unmatched request: 405 with the route's methods
        assert r.status_code == 405 and r.headers["allow"] == "POST", (r.status_code, r.headers)
        assert client.get("/no/such/path").status_code == 404
        assert "/v1/models/{name}/recommend" in client.get("/openapi.json").json()["paths"]

"""What ``aiforge serve`` does before it is ready: the serving stack, not the training API or the data readers.

Start-up time is measured in ``bench/cold_start.py``; these tests keep the heavy modules out of the path, in a
fresh interpreter (the CLI module, the app factory, and loading and warming up a text bundle): the routes of
kinds no served model has, and the pages, are imported on first need; the background load (``serve/preload.py``)
hands each bundle, or its loading error, to the app; a plain ``aiforge serve`` command line is read without typer
(``serve/launch.py``) exactly as typer reads it, and anything else is left to typer.
"""

from __future__ import annotations

import json
import os
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
from aiforge.serve.launch import FLAGS, OPTIONS, PlainServe, read_plain_serve
from aiforge.serve.loadgen import aiforge_server_args, free_port, running_server
from aiforge.serve.preload import Preload
from serve_helpers import server_env

# Never needed to serve a text bundle: the training stack, the data readers, the spec loader, the HTTP client.
NOT_ON_THE_SERVE_PATH = ["torch", "transformers", "onnx", "sklearn", "pandas", "pyarrow", "yaml", "httpx",
                         "aiforge.app", "aiforge.spec", "aiforge.audit", "aiforge.data",
                         # the routes of the kinds a text bundle is not (included on the first request they match)
                         "aiforge.tasks.chat.routes", "aiforge.tasks.image.routes", "aiforge.tasks.recommend.routes",
                         "aiforge.tasks.driving.routes",
                         # the pages (included on the first request they match) and the typer CLI
                         "aiforge.serve.web", "typer", "rich", "aiforge.commands"]

_CHILD = """
import json, sys
import aiforge.cli, aiforge.serve.launch
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


# What the main thread of `aiforge serve` does before it imports FastAPI: read the command line and the first
# bundle's serve block, start the preload, build the settings. numpy (and the runtime) load in the preload thread.
_BEFORE_FASTAPI = """
import json, sys
from aiforge.serve.launch import read_plain_serve
from aiforge.serve.spec_settings import bundle_serve_values
from aiforge.serve.config import server_config
import aiforge.serve.preload, aiforge.serve.backends
plain = read_plain_serve(["serve", sys.argv[1], "--port", "0"])
config = server_config(list(plain.bundles), from_bundle=bundle_serve_values(plain.bundles), **plain.settings)
loaded = lambda: {m: m in sys.modules for m in ("numpy", "aiforge.bundle.runtime", "fastapi")}
before = loaded()
config.item_limits()  # the one setting that needs the runtime module
print(json.dumps([before, loaded()]))
"""


def test_the_main_thread_reads_the_bundle_and_the_settings_without_numpy(trained_bundle: Any) -> None:
    proc = subprocess.run([sys.executable, "-c", _BEFORE_FASTAPI, str(trained_bundle.export.path)],
                          capture_output=True, text=True, timeout=120, env=server_env(Path(trained_bundle.home)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    before, after = json.loads(proc.stdout.strip().splitlines()[-1])
    assert before == {"numpy": False, "aiforge.bundle.runtime": False, "fastapi": False}, before
    assert after == {"numpy": True, "aiforge.bundle.runtime": True, "fastapi": False}, after


def test_serve_keeps_openblas_threads_from_spinning_unless_the_operator_says(trained_bundle: Any,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """numpy's OpenBLAS threads busy-wait ~0.1 s of CPU after import: serve_bundles sets them to sleep at once,
    before numpy loads, and leaves an operator's own OPENBLAS_THREAD_TIMEOUT alone."""
    from aiforge.serve import backends
    from aiforge.serve.launch import serve_bundles

    seen: list[str | None] = []

    def record(bundles: Any, *, preload: Any, **_: Any) -> None:
        seen.append(os.environ.get("OPENBLAS_THREAD_TIMEOUT"))
        assert isinstance(preload.take(bundles[0]), Runtime)  # the load that began is waited for

    monkeypatch.setattr(backends, "serve", record)
    path = str(trained_bundle.export.path)
    monkeypatch.setenv("OPENBLAS_THREAD_TIMEOUT", "")
    monkeypatch.delenv("OPENBLAS_THREAD_TIMEOUT")
    serve_bundles([path], settings={"threads": 1}, home=trained_bundle.home)
    monkeypatch.setenv("OPENBLAS_THREAD_TIMEOUT", "8")
    serve_bundles([path], settings={"threads": 1}, home=trained_bundle.home)
    assert seen == ["4", "8"]


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


# --- a plain `aiforge serve` read without typer, exactly as typer reads it ------------------------------------

# serve's options the quick reading leaves to typer: Ray's and help
LEFT_TO_TYPER = {"--backend", "--replicas", "--autoscale", "--replica-cpus", "--ray-ingress", "--ray-address", "--help"}


def test_the_quick_reading_knows_every_option_of_serve() -> None:
    import typer

    from aiforge.cli import app

    command = typer.main.get_command(app).commands["serve"]  # type: ignore[attr-defined]
    options = {name for p in command.params for name in [*p.opts, *p.secondary_opts] if name.startswith("--")}
    assert options | {"--help"} == set(OPTIONS) | set(FLAGS) | {"--home"} | LEFT_TO_TYPER
    assert {field for field, _ in OPTIONS.values()} | {f for f, _ in FLAGS.values()} <= set(ServerConfig.model_fields)


PLAIN = [["serve", "a"], ["serve", "a", "b:2", "--port", "0", "--no-access-log", "--threads=3"],
         ["serve", "--precision", "fp32", "a", "--home", "/tmp/h", "--max-wait-ms", "2.5", "--timeout=.5"],
         ["serve", "a", "--public-docs-metrics", "--rate-limit", "10", "--rate-burst", "4", "--port", "1",
          "--port", "2"],
         ["serve", "a", "--api-key-file", "keys.txt", "--host", "0.0.0.0", "--max-body-bytes", "2048"]]


@pytest.mark.parametrize("argv", PLAIN, ids=lambda a: " ".join(a))
def test_a_plain_serve_is_read_as_typer_reads_it(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """What the quick reading passes to serve_bundles is what the typer command passes, for the same words."""
    from typer.testing import CliRunner

    from aiforge.cli import app
    from aiforge.serve import launch

    seen: list[PlainServe] = []

    def record(bundles: Any, *, settings: Any, home: Any = None, backend: str = "local", scale: Any = None) -> None:
        assert backend == "local"
        seen.append(PlainServe(tuple(bundles), {k: v for k, v in settings.items() if v is not None}, home))

    monkeypatch.setattr(launch, "serve_bundles", record)
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    assert read_plain_serve(argv) == seen[0]


@pytest.mark.parametrize("argv", [
    [], ["train", "spec.yaml"], ["--debug", "serve", "a"], ["serve"], ["serve", "a", "--help"],
    ["serve", "a", "--backend", "ray"], ["serve", "a", "--backend", "local"], ["serve", "a", "--threads", "two"],
    ["serve", "a", "--threads", "+2"], ["serve", "a", "--port", "-1"], ["serve", "a", "--max-wait-ms", "1e3"],
    ["serve", "a", "-x"], ["serve", "a", "--port"], ["serve", "a", "--no-such-option"], ["serve", "a", "--home="],
    ["serve", "a", "--access-log=yes"], ["serve", "--", "a"]], ids=lambda a: " ".join(a) or "nothing")
def test_anything_else_is_left_to_typer(argv: list[str]) -> None:
    assert read_plain_serve(argv) is None


def test_a_usage_error_and_a_bad_setting_exit_as_before(trained_bundle: Any) -> None:
    """Left to typer: a usage error exits 2 with its usage line. Read quickly: a setting out of bounds exits 1
    with the one-line error, after the load begun in the background finished (no abort while a thread builds
    an onnxruntime session)."""
    home, path = Path(trained_bundle.home), str(trained_bundle.export.path)
    usage = subprocess.run([sys.executable, "-m", "aiforge.cli", "serve", path, "--port", "not-a-number"],
                           capture_output=True, text=True, timeout=120, env=server_env(home))
    assert usage.returncode == 2 and "Usage:" in usage.stderr and "Invalid value for '--port'" in (
        usage.stderr), usage.stderr[-800:]
    for _ in range(2):
        bad = subprocess.run([sys.executable, "-m", "aiforge.cli", "serve", path, "--port", "99999"],
                             capture_output=True, text=True, timeout=120, env=server_env(home))
        assert bad.returncode == 1, (bad.returncode, bad.stderr[-800:])
        assert bad.stderr.startswith("error: invalid server settings: --port:") and "Traceback" not in bad.stderr


def test_a_served_bundle_never_imports_typer(trained_bundle: Any, tmp_path: Path) -> None:
    """A real `aiforge serve BUNDLE`: ready and answering, and neither typer, rich nor the pages were imported."""
    home, port, log = Path(trained_bundle.home), free_port(), tmp_path / "server.log"
    env = {**server_env(home), "PYTHONPROFILEIMPORTTIME": "1"}
    with running_server(aiforge_server_args([str(trained_bundle.export.path)], port=port), port=port, env=env,
                        log=log) as (_, _ready):
        import httpx

        r = httpx.post(f"http://127.0.0.1:{port}/v1/models/{trained_bundle.name}/predict",
                       json={"inputs": ["where is my card?"]}, timeout=30)
        assert r.status_code == 200, r.text
        imported = {line.rsplit("|", 1)[1].strip() for line in log.read_text().splitlines()
                    if line.startswith("import time:")}
        assert "fastapi" in imported and "onnxruntime" in imported
        assert not {"typer", "rich", "aiforge.commands", "aiforge.serve.web.routes"} & imported
        assert "websockets" not in imported  # uvicorn told there is no WebSocket protocol to choose
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=30).status_code == 200  # the pages, on first need

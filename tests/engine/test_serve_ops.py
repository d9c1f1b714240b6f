"""Operating a server: API keys, overload, SIGTERM drain, readiness, ``aiforge bench``."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aiforge.errors import AiforgeError, ServerError
from aiforge.serve import Client, create_app
from aiforge.serve.config import ApiKeys, ServerConfig
from aiforge.serve.loadgen import check_loopback, ephemeral_range_start, free_port, run_load
from serve_helpers import (
    RunningServer,
    launch,
    metric_samples,
    read_texts,
    server_env,
    serving,
    stop_server,
    v2_body,
)

KEY_1 = "k1-3f9c2a7e5b1d4c6a8e0f2b4d6a8c0e1f"
KEY_2 = "k2-0a1b2c3d4e5f60718293a4b5c6d7e8f9"


def write_keys(path: Path) -> Path:
    path.write_text(f"# aiforge API keys\n{KEY_1}\n\n  {KEY_2}  \n", encoding="utf-8")
    return path


# ----- API keys ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed_server(trained_bundle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("keyed-server")
    keys = write_keys(folder / "keys.txt")
    with serving(trained_bundle.export.path, trained_bundle.home, folder / "server.log",
                 extra=["--api-key-file", str(keys)]) as running:
        yield running


def test_model_routes_need_a_valid_api_key(keyed_server: RunningServer, trained_bundle) -> None:
    infer = f"/v2/models/{trained_bundle.name}/infer"
    body = v2_body(["I lost my card"])
    with httpx.Client(base_url=keyed_server.url, timeout=60) as http:
        for headers in ({}, {"Authorization": "Bearer wrong-key"}, {"X-API-Key": "wrong-key"},
                        {"Authorization": f"Basic {KEY_1}"}, {"Authorization": "Bearer"},
                        {"Authorization": f"Bearer {KEY_1}x"}):
            r = http.post(infer, json=body, headers=headers)
            assert r.status_code == 401, (headers, r.text)
            assert r.headers["content-type"].startswith("application/json")
            assert "API key" in r.json()["error"]
            assert r.headers["www-authenticate"] == "Bearer"
        for path in (f"/v2/models/{trained_bundle.name}", "/v1/models"):
            assert http.get(path).status_code == 401, path
        r = http.post(f"/v1/models/{trained_bundle.name}/predict", json={"inputs": ["hi"]})
        assert r.status_code == 401

        r = http.post(infer, json=body, headers={"Authorization": f"Bearer {KEY_1}"})
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["name"] == "label"
        r = http.post(infer, json=body, headers={"X-API-Key": KEY_2})
        assert r.status_code == 200, r.text
        r = http.get("/v1/models", headers={"Authorization": f"Bearer {KEY_2}"})
        assert r.status_code == 200 and r.json()["models"][0]["name"] == trained_bundle.name

        # health stays open, so orchestrators need no key
        assert http.get("/v2").status_code == 200
        assert http.get("/v2/health/live").json() == {"live": True}
        r = http.get("/v2/health/ready")
        assert r.status_code == 200 and r.json() == {"ready": True}


def test_python_client_sends_the_api_key(keyed_server: RunningServer, trained_bundle) -> None:
    with Client(keyed_server.url, api_key=KEY_2) as client:
        [pred] = client.predict(trained_bundle.name, ["how do I top up with apple pay"])
        assert pred.label in pred.scores
    with Client(keyed_server.url) as client, pytest.raises(ServerError) as info:
        client.predict(trained_bundle.name, ["hello"])
    assert info.value.status == 401


def test_free_ports_lie_below_the_ephemeral_range_and_are_free() -> None:
    # a port bind(0) handed out can be handed again to a Ray worker before the server binds it
    low = ephemeral_range_start()
    ports = {free_port() for _ in range(20)}
    assert all(1024 <= p < low for p in ports), (low, ports)
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_api_keys_keep_only_hashes(tmp_path: Path) -> None:
    keys = ApiKeys.from_file(write_keys(tmp_path / "keys.txt"))
    assert keys.check(KEY_1) and keys.check(KEY_2)
    for bad in (None, "", "wrong", KEY_1[:-1], f" {KEY_1}", "# aiforge API keys"):
        assert not keys.check(bad), bad
    expected = sorted(hashlib.sha256(k.encode()).digest() for k in (KEY_1, KEY_2))
    state = vars(keys)
    assert list(state) == ["_hashes"]
    assert sorted(state["_hashes"]) == expected
    dumped = pickle.dumps(keys) + repr(state).encode()
    for key in (KEY_1, KEY_2):
        assert key.encode() not in dumped


def test_missing_or_empty_key_file_is_refused(tmp_path: Path, trained_bundle) -> None:
    with pytest.raises(AiforgeError, match="not found"):
        ApiKeys.from_file(tmp_path / "absent.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing here\n\n", encoding="utf-8")
    with pytest.raises(AiforgeError, match="no API key"):
        ApiKeys.from_file(empty)
    with pytest.raises(AiforgeError, match="not found"):
        create_app([trained_bundle.export.path], config=ServerConfig(api_key_file=tmp_path / "absent.txt"))


def test_text_that_is_not_valid_unicode_is_a_client_error(keyed_server: RunningServer, trained_bundle) -> None:
    # JSON may carry a lone surrogate (\ud800); it is no valid text, and must not be a server error.
    payload = b'{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["\\ud800 card"]}]}'
    r = httpx.post(f"{keyed_server.url}/v2/models/{trained_bundle.name}/infer", content=payload,
                   headers={"X-API-Key": KEY_1}, timeout=60)
    assert r.status_code in (400, 422), r.text
    assert "error" in r.json()


# ----- overload ------------------------------------------------------------------------------


async def _flood(url: str, path: str, n: int, texts: list[str]) -> list[httpx.Response | Exception]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        async def one(i: int) -> httpx.Response:
            return await client.post(path, json=v2_body([f"{t} ({i})" for t in texts]))

        return await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)


def test_overload_answers_503_with_retry_after_and_recovers(trained_bundle, tmp_path: Path) -> None:
    texts = read_texts(trained_bundle.data / "test.csv")[::10][:8]
    assert len(texts) == 8
    path = f"/v2/models/{trained_bundle.name}/infer"
    with serving(trained_bundle.export.path, trained_bundle.home, tmp_path / "server.log",
                 extra=["--max-queue-items", "32", "--max-batch-size", "32"]) as server:
        results = asyncio.run(_flood(server.url, path, 200, texts))
        failures = [r for r in results if isinstance(r, Exception)]
        assert not failures, failures[:3]
        responses = [r for r in results if isinstance(r, httpx.Response)]
        statuses = [r.status_code for r in responses]
        assert 500 not in statuses
        assert set(statuses) <= {200, 503}, sorted(set(statuses))
        refused = [r for r in responses if r.status_code == 503]
        served = [r for r in responses if r.status_code == 200]
        assert refused, "a 32-item queue took 200 requests of 8 texts without refusing any"
        assert served, "no request was served under overload"
        for r in refused:
            assert int(r.headers["retry-after"]) >= 1
            assert r.headers["content-type"].startswith("application/json")
            assert "overloaded" in r.json()["error"]
        for r in served:
            assert len(r.json()["outputs"][0]["data"]) == 8

        # recovery: the queue drained, a normal request is served
        r = httpx.post(server.url + path, json=v2_body(texts[:2]), timeout=60)
        assert r.status_code == 200, r.text
        metrics = metric_samples(httpx.get(server.url + "/metrics", timeout=10).text)
        route = "/v2/models/{name}/infer"
        assert metrics[("aiforge_requests_total", (("route", route), ("status", "503")))] == len(refused)
        assert metrics[("aiforge_requests_total", (("route", route), ("status", "200")))] == len(served) + 1
        assert not [k for k in metrics if ("status", "500") in k[1]]


# ----- SIGTERM, readiness ---------------------------------------------------------------------


def _raw_request(port: int, path: str, body: dict[str, Any]) -> socket.socket:
    """A connected socket that has sent one complete ``Connection: close`` POST."""
    payload = json.dumps(body).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n").encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.sendall(head + payload)
    return sock


def _read_response(sock: socket.socket, into: dict[str, Any]) -> None:
    chunks: list[bytes] = []
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            into.setdefault("first_byte", time.monotonic())
            chunks.append(data)
    except OSError as exc:
        into["error"] = repr(exc)
    finally:
        sock.close()
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode(errors="replace")
    into["status"] = int(status_line.split()[1]) if status_line.startswith("HTTP/1.1 ") else None
    into["body"] = body


def test_sigterm_drains_requests_in_flight(trained_bundle, tmp_path: Path) -> None:
    server = launch(trained_bundle.export.path, trained_bundle.home, tmp_path / "server.log")
    try:
        long_texts = [" ".join(read_texts(trained_bundle.data / "test.csv")[i:i + 6]) for i in range(0, 80, 20)]
        path = f"/v2/models/{trained_bundle.name}/infer"
        n = 40
        sockets = [_raw_request(server.port, path, v2_body([f"{t} #{i}" for t in long_texts])) for i in range(n)]
        results: list[dict[str, Any]] = [{} for _ in range(n)]
        readers = [threading.Thread(target=_read_response, args=(s, res), daemon=True)
                   for s, res in zip(sockets, results, strict=True)]
        for t in readers:
            t.start()
        time.sleep(0.3)  # every request is sent; let the server read them all
        sigterm_at = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        for t in readers:
            t.join(timeout=60)
        code = server.proc.wait(timeout=30)
        exited_after = time.monotonic() - sigterm_at
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
    statuses = [r.get("status") for r in results]
    assert statuses == [200] * n, (statuses, [r.get("error") for r in results], server.log_tail())
    for r in results:
        outputs = json.loads(r["body"])["outputs"]
        assert len(outputs[0]["data"]) == len(long_texts)
    late = [r for r in results if r["first_byte"] > sigterm_at]
    assert late, "every response came before SIGTERM: the test did not exercise the drain"
    assert exited_after < 30
    assert code is not None
    assert "Application shutdown complete" in server.log_tail()


def test_sigterm_exit_code_is_zero(trained_bundle, tmp_path: Path) -> None:
    server = launch(trained_bundle.export.path, trained_bundle.home, tmp_path / "server.log")
    code = stop_server(server, timeout=30)
    assert code == 0, f"exit code {code}"


def _slow_to_load(bundle: Path, into: Path) -> Path:
    """A copy of ``bundle`` with a 1 GiB file of its own, listed and checksummed: the server verifies every
    file before it is ready, so loading takes long enough for the probes to see it, however fast the
    machine (a small bundle sometimes loaded before the first probe; and ``aiforge serve`` starts loading
    before it imports the web stack, so 256 MiB were verified before live answered)."""
    import shutil

    from aiforge.bundle.format import MANIFEST, read_manifest, write_manifest

    copy = into / "slow-bundle"
    shutil.copytree(bundle, copy)
    manifest = read_manifest(copy)
    (copy / MANIFEST).unlink()
    with (copy / "ballast.bin").open("wb") as f:
        for _ in range(128):
            f.write(b"\x5a" * (8 << 20))
    write_manifest(copy, task=manifest.task, name=manifest.name, version=manifest.version, extra=manifest.extra)
    return copy


def test_live_before_ready_then_ready_within_30_s(trained_bundle, tmp_path: Path) -> None:
    bundle = _slow_to_load(trained_bundle.export.path, tmp_path)
    started = time.monotonic()
    server = launch(bundle, trained_bundle.home, tmp_path / "server.log", ready_path="/v2/health/live")
    try:
        name = trained_bundle.name
        # live answers while the model is still loading: ready and the model routes say 503
        r = httpx.get(f"{server.url}/v2/health/ready", timeout=10)
        assert r.status_code == 503 and r.json() == {"ready": False}, r.text
        r = httpx.get(f"{server.url}/v2/models/{name}", timeout=10)
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "1" and "loading" in r.json()["error"]
        while True:
            r = httpx.get(f"{server.url}/v2/health/ready", timeout=10)
            if r.status_code == 200:
                break
            assert r.status_code == 503
            assert time.monotonic() - started < 30, "not ready within 30 s"
            time.sleep(0.02)
        ready_after = time.monotonic() - started
        assert r.json() == {"ready": True}
        assert server.ready_seconds < ready_after < 30
        assert httpx.get(f"{server.url}/v2/models/{name}/ready", timeout=10).json()["ready"] is True
        r = httpx.post(f"{server.url}/v2/models/{name}/infer", json=v2_body(["I lost my card"]), timeout=60)
        assert r.status_code == 200
    finally:
        stop_server(server)


# ----- aiforge bench and the loopback guard ------------------------------------------------------


@pytest.mark.slow
def test_bench_cli_writes_levels(trained_bundle, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "aiforge.cli", "bench", trained_bundle.name, "--concurrency", "1,4",
                           "--duration", "2", "-o", str(out)],
                          capture_output=True, text=True, timeout=240, env=server_env(trained_bundle.home))
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["name"] == trained_bundle.name
    assert Path(report["bundle"]) == trained_bundle.export.path
    assert 0 < report["ready_seconds"] < 60 and report["rss_mb_after_load"] > 0
    assert [lvl["concurrency"] for lvl in report["levels"]] == [1, 4]
    for lvl in report["levels"]:
        assert lvl["throughput_rps"] > 0
        assert lvl["errors"] == 0 and lvl["status_counts"] == {"200": lvl["requests"]}
        assert all(math.isfinite(lvl[k]) and lvl[k] > 0 for k in ("p50_ms", "p95_ms", "p99_ms", "mean_ms"))
        assert lvl["p50_ms"] <= lvl["p95_ms"] <= lvl["p99_ms"]
        assert 1.5 < lvl["duration_s"] < 30
    assert "wrote" in proc.stdout


def test_load_generator_only_targets_loopback() -> None:
    for url in ("http://127.0.0.1:8000", "http://localhost:8000/v2", "http://[::1]:9000", "http://127.8.9.10:1"):
        check_loopback(url)
    for url in ("http://10.0.0.1:8000", "http://192.168.1.2", "https://example.com", "http://0.0.0.0:8000",
                "http://[::ffff:10.0.0.1]:80", "not a url"):
        with pytest.raises(AiforgeError, match="loopback"):
            check_loopback(url)
    with pytest.raises(AiforgeError, match="loopback"):
        run_load("http://10.0.0.1:8000", "/v2/models/x/infer", ["hi"], concurrency=1, duration=1)


def test_server_config_takes_the_bundles_serve_block_and_cli_wins(trained_bundle) -> None:
    from aiforge.errors import AiforgeError
    from aiforge.serve.config import server_config

    spec_serve = trained_bundle.export.manifest.extra["spec"]["serve"]
    cfg = server_config([str(trained_bundle.export.path)])
    assert cfg.max_batch_size == spec_serve["max_batch_size"]
    assert cfg.max_wait_ms == spec_serve["max_wait_ms"]
    cfg = server_config([str(trained_bundle.export.path)], max_batch_size=7, max_wait_ms=None)
    assert cfg.max_batch_size == 7
    assert cfg.max_wait_ms == spec_serve["max_wait_ms"]
    with pytest.raises(AiforgeError, match="max-batch-size"):
        server_config([str(trained_bundle.export.path)], max_batch_size=0)


# ----- who chooses the bind address (issue 16, item 6) -------------------------------------------


def _register_copy(bundle: Path, home: Path, *, serve: dict[str, Any]) -> Path:
    """A copy of ``bundle`` registered at ``home`` with ``serve`` merged into its stored spec (a real export)."""
    import shutil

    from aiforge.bundle import Registry, read_manifest

    manifest = read_manifest(bundle)
    registry = Registry(home)
    staged = registry.staging_dir()
    for rel in manifest.files:
        (staged / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(bundle / rel, staged / rel)
    extra = dict(manifest.extra)
    extra["spec"] = {**extra["spec"], "serve": {**extra["spec"]["serve"], **serve}}
    return registry.add(staged, name=manifest.name, task=manifest.task, extra=extra).path


def test_a_bundle_never_chooses_the_bind_address(german, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aiforge.serve.config import server_config

    monkeypatch.delenv("AIFORGE_HOST", raising=False)
    bundle = str(_register_copy(german.path, tmp_path / "home", serve={"host": "0.0.0.0", "port": 8765,
                                                                       "max_batch_size": 9}))
    cfg = server_config([bundle])
    assert cfg.host == "127.0.0.1"  # not the bundle's 0.0.0.0
    assert (cfg.port, cfg.max_batch_size) == (8765, 9)  # its port and batching settings still apply
    monkeypatch.setenv("AIFORGE_HOST", "127.0.0.2")
    assert server_config([bundle]).host == "127.0.0.2"  # the operator's environment
    assert server_config([bundle], host="::1").host == "::1"  # the command line wins


# ----- a bundle that fails to load (issue 16, item 9) --------------------------------------------


def _broken_copy(bundle: Path, tmp_path: Path) -> Path:
    """A copy of ``bundle`` whose card.md was changed after export: loading refuses it."""
    import shutil

    broken = Path(shutil.copytree(bundle, tmp_path / "broken"))
    (broken / "card.md").write_text("# edited after export\n", encoding="utf-8")
    return broken


def _wait_loaded(client: Any, deadline_s: float = 30.0) -> httpx.Response:
    """The first /v2/health/ready answer that is not 'still loading' (the old server stayed there forever)."""
    started = time.monotonic()
    while True:
        r = client.get("/v2/health/ready")
        if r.json() != {"ready": False}:
            return r
        assert time.monotonic() - started < deadline_s, "still 'loading' after 30 s: the load error is not reported"
        time.sleep(0.05)


def test_a_bundle_that_fails_to_load_is_reported_and_the_others_serve(german, records, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    broken = _broken_copy(german.path, tmp_path)
    with TestClient(create_app([german.path, broken])) as client:
        r = _wait_loaded(client)
        assert r.status_code == 503
        [failure] = r.json()["errors"]
        assert r.json()["ready"] is False and failure["source"] == str(broken)
        assert "'card.md'" in failure["error"] and "does not match its sha256" in failure["error"]
        listing = client.get("/v1/models")
        assert listing.status_code == 200
        assert listing.json()["ready"] is False and listing.json()["errors"] == [failure]
        name = german.export.record.name
        assert [m["name"] for m in listing.json()["models"]] == [name]
        r = client.post(f"/v1/models/{name}/predict", json={"inputs": records[:2]})
        assert r.status_code == 200 and len(r.json()["predictions"]) == 2  # the bundle that loaded serves
        r = client.get("/v2/models/other")
        assert r.status_code == 503 and "failed to load" in r.json()["error"] and "card.md" in r.json()["error"]


def test_serve_exits_non_zero_when_no_model_loads(german, tmp_path: Path) -> None:
    from aiforge.serve.loadgen import aiforge_server_args, free_port

    broken = _broken_copy(german.path, tmp_path)
    proc = subprocess.run(aiforge_server_args([str(broken)], port=free_port()), capture_output=True, text=True,
                          timeout=90, env=server_env(german.home))
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no model could be loaded") and "'card.md'" in last, proc.stderr[-3000:]

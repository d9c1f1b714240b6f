"""Helpers for the serving tests: real ``aiforge serve`` processes on 127.0.0.1 and request bodies."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from aiforge.serve.loadgen import aiforge_server_args, free_port, start_server

__all__ = ["RunningServer", "launch", "metric_samples", "read_texts", "serve_in_child", "server_env", "serving",
           "stop_server", "v2_body"]


@dataclass
class RunningServer:
    """A server subprocess, its port, how long it took to be ready and where it logs."""

    proc: subprocess.Popen[bytes]
    port: int
    ready_seconds: float
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the server's log, for assertion messages."""
        try:
            return self.log.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return "(no log)"


def server_env(home: Path) -> dict[str, str]:
    """This process's environment with the registry at ``home`` and the Hub offline."""
    return dict(os.environ, AIFORGE_HOME=str(home), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")


def launch(bundle: Path, home: Path, log: Path, *, extra: list[str] | None = None,
           ready_path: str = "/v2/health/ready", timeout: float = 120.0) -> RunningServer:
    """Start ``aiforge serve BUNDLE`` on a free port; return once ``ready_path`` answers 200."""
    port = free_port()
    args = aiforge_server_args([str(bundle)], port=port, extra=extra)
    proc, ready = start_server(args, port=port, ready_path=ready_path, timeout=timeout, env=server_env(home), log=log)
    return RunningServer(proc=proc, port=port, ready_seconds=ready, log=log)


def stop_server(server: RunningServer, timeout: float = 30.0) -> int | None:
    """SIGTERM the server and wait for it; kill it if it does not exit in ``timeout`` (returns None then)."""
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
    try:
        return server.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait(timeout=10)
        return None


@contextmanager
def serving(bundle: Path, home: Path, log: Path, *, extra: list[str] | None = None,
            ready_path: str = "/v2/health/ready") -> Iterator[RunningServer]:
    """A running server for the ``with`` block; SIGTERMed (killed if need be) afterwards."""
    server = launch(bundle, home, log, extra=extra, ready_path=ready_path)
    try:
        yield server
    finally:
        stop_server(server)


def v2_body(texts: list[str], **extra: Any) -> dict[str, Any]:
    """An Open Inference Protocol v2 request body for ``texts``."""
    return {"inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}], **extra}


def read_texts(csv_path: Path, n: int | None = None) -> list[str]:
    """The ``text`` column of a CSV file (the first ``n`` rows)."""
    with csv_path.open(newline="", encoding="utf-8") as fh:
        texts = [row["text"] for row in csv.DictReader(fh)]
    return texts[:n] if n is not None else texts


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text as ``{(sample name, sorted label pairs): value}``."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


_SERVE_IN_CHILD = """
import importlib, json, sys, time
bundle, home, imports, requests, watch = sys.argv[1], sys.argv[2], *map(json.loads, sys.argv[3:])
def loaded():
    return sorted(m for m in watch if m in sys.modules)
after_import = {}
for module in imports:
    importlib.import_module(module)
    after_import[module] = loaded()
import aiforge
from aiforge.serve.app import create_app
runtime = aiforge.load(bundle, home=home)
after_load = loaded()
from fastapi.testclient import TestClient
with TestClient(create_app([runtime])) as client:
    deadline = time.monotonic() + 60
    while client.get("/v2/health/ready").status_code != 200:
        assert time.monotonic() < deadline, "not ready"
        time.sleep(0.05)
    statuses = [client.post(route, json=body).status_code for route, body in requests]
print(json.dumps({"statuses": statuses, "after_import": after_import, "after_load": after_load,
                  "after_serving": loaded()}))
"""


@dataclass(frozen=True)
class ChildReport:
    """What a fresh interpreter loaded while it imported modules, loaded a bundle and answered requests."""

    statuses: list[int]
    after_import: dict[str, list[str]]  # module -> watched modules loaded once it (and those before) were imported
    after_load: list[str]
    after_serving: list[str]


def serve_in_child(bundle: Path, home: Path, *, imports: list[str], requests: list[tuple[str, dict[str, Any]]],
                   watch: list[str]) -> ChildReport:
    """In a fresh interpreter: import ``imports`` in order, ``aiforge.load`` the bundle, serve it
    (``create_app`` + TestClient) and POST each ``(route, body)`` of ``requests``; report which modules
    of ``watch`` were loaded at each step and the HTTP statuses."""
    proc = subprocess.run([sys.executable, "-c", _SERVE_IN_CHILD, str(bundle), str(home), json.dumps(imports),
                           json.dumps(requests), json.dumps(watch)],
                          capture_output=True, text=True, timeout=180, env=server_env(home))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return ChildReport(**json.loads(proc.stdout.strip().splitlines()[-1]))

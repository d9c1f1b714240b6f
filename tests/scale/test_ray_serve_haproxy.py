"""``serve --backend ray --ray-ingress haproxy``: Ray's high-throughput mode (HAProxy in front, each replica's
own HTTP server) answers as the in-process server does, tags the replica, and a burst far past the replica's
capacity is refused in part by HAProxy (aiforge.scale.haproxy), 503 + Retry-After with a JSON body, and loses
nothing. It is the real CLI, in its own process, starting its own local cluster."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

import aiforge
from aiforge.scale.replica import REPLICA_HEADER
from aiforge.serve.app import create_app
from aiforge.serve.config import ServerConfig
from aiforge.serve.loadgen import free_port, running_server

pytestmark = [pytest.mark.slow, pytest.mark.heavy]
BATCH = 4  # max_ongoing_requests 2 x 4 and max_queued_requests 256: a burst of 800 is past both


@pytest.fixture(scope="module")
def haproxy_url(german: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    args = [sys.executable, "-m", "aiforge.cli", "serve", str(german.path), "--backend", "ray", "--ray-ingress",
            "haproxy", "--replica-cpus", "1", "--port", str(port), "--max-batch-size", str(BATCH), "--no-access-log"]
    env = dict(os.environ, RAY_AUTH_MODE="disabled")  # tests only: a loopback cluster of this test's own processes
    log = Path(tmp_path_factory.mktemp("haproxy")) / "serve.log"
    with running_server(args, port=port, env=env, timeout=300, log=log):
        yield f"http://127.0.0.1:{port}"


def test_haproxy_ingress_answers_as_in_process_and_refuses_a_burst_past_capacity(haproxy_url: str, german: Any,
                                                                       german_records: list[dict[str, Any]]) -> None:
    name = german.export.record.name
    requests = [("get", f"/v2/models/{name}", None), ("post", f"/v1/models/{name}/predict",
                                                       {"inputs": german_records[:3]}),
                ("post", f"/v1/models/{name}/predict", {"inputs": [dict(german_records[0], duration="forty")]})]
    with TestClient(create_app([aiforge.load(german.path)], config=ServerConfig(access_log=False))) as local, \
            httpx.Client(base_url=haproxy_url, timeout=30.0) as remote:
        while local.get("/v2/health/ready").status_code != 200:
            time.sleep(0.05)
        for method, path, body in requests:
            here, there = local.request(method, path, json=body), remote.request(method, path, json=body)
            assert (there.status_code, there.json()) == (here.status_code, here.json()), path
            assert there.headers[REPLICA_HEADER].startswith("SERVE_REPLICA::")
    url = f"{haproxy_url}/v1/models/{name}/predict"

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=800, max_keepalive_connections=800)
        async with httpx.AsyncClient(limits=limits, timeout=120.0) as client:
            return await asyncio.gather(*(client.post(url, json={"inputs": german_records[:1]}) for _ in range(800)))

    answers = asyncio.run(burst())
    statuses = Counter(a.status_code for a in answers)
    # no 500, no 504, nothing dropped; past 8 ongoing + 256 queued (or 1 s in the queue) refused
    assert set(statuses) <= {200, 503} and statuses[200] >= 8 and statuses[503] > 0, statuses
    refused = [a for a in answers if a.status_code == 503]
    assert all(a.headers.get("retry-after") == "1" and isinstance(a.json()["error"], str) for a in refused), \
        {(str(a.headers), a.text) for a in refused}

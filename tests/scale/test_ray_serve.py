"""``serve --backend ray`` on a real two-node cluster: same answers as in-process, replicas on both nodes,
503 + Retry-After over capacity, and a replica killed under load costs no request."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

import aiforge
from aiforge.scale.options import ScaleOptions
from aiforge.scale.replica import REPLICA_HEADER
from aiforge.scale.serving import RayServing, start_ray_serve
from aiforge.serve.app import create_app
from aiforge.serve.config import ServerConfig
from aiforge.serve.loadgen import free_port

pytestmark = pytest.mark.slow
REPLICA_CPUS = 2.0  # the head has 3 logical CPUs and the worker 2: one replica fits on each node
BATCH = 8  # small batches, so max_ongoing_requests (2 x 8 per replica) + max_queued_requests (8) is a small capacity


@pytest.fixture(scope="module")
def served(ray_cluster: Any, german: Any) -> Iterator[RayServing]:
    """The German credit bundle on Ray Serve: 2 replicas of 2 CPUs each, so one per node."""
    config = ServerConfig(port=free_port(), max_batch_size=BATCH, access_log=False)
    options = ScaleOptions(replicas=2, cpus_per_replica=REPLICA_CPUS, max_queued_requests=8,
                           ray_address=ray_cluster.address)
    serving = start_ray_serve([german.path], config=config, options=options, ready_timeout=120)
    try:
        yield serving
    finally:
        serving.stop()


@dataclass(frozen=True)
class Actor:
    name: str
    node_id: str
    pid: int


def _replica_actors() -> dict[str, Actor]:
    """Alive Serve replica actors by name (the x-aiforge-replica value): their node and pid (from the GCS)."""
    from ray._private.state import actors  # the state API proper needs the dashboard, which the cluster runs without

    found = {}
    for info in actors(actor_state_name="ALIVE").values():
        name = info.get("Name") or ""
        if name.startswith("SERVE_REPLICA::"):
            found[name] = Actor(name=name, node_id=info["Address"]["NodeID"], pid=int(info["Pid"]))
    return found


def _predict(client: httpx.Client, url: str, name: str, records: list[dict[str, Any]]) -> httpx.Response:
    return client.post(f"{url}/v1/models/{name}/predict", json={"inputs": records}, timeout=30.0)


def test_same_routes_and_answers_as_the_in_process_server(served: RayServing, german: Any,
                                                          german_records: list[dict[str, Any]]) -> None:
    name = german.export.record.name
    bad = [dict(german_records[0], duration="forty")]
    requests = [("get", f"/v2/models/{name}", None), ("get", "/v1/models", None),
                ("post", f"/v1/models/{name}/predict", {"inputs": german_records[:5]}),
                ("post", f"/v1/models/{name}/predict", {"inputs": bad}),
                ("post", "/v1/models/nope/predict", {"inputs": german_records[:1]})]
    statuses: list[int] = []
    with TestClient(create_app([aiforge.load(german.path)], config=ServerConfig(access_log=False))) as local, \
            httpx.Client(base_url=served.url) as remote:
        while local.get("/v2/health/ready").status_code != 200:
            time.sleep(0.05)
        for method, path, body in requests:
            here = local.request(method, path, json=body)
            there = remote.request(method, path, json=body, timeout=30.0)
            assert (there.status_code, there.json()) == (here.status_code, here.json()), path
            statuses.append(there.status_code)
            assert there.headers[REPLICA_HEADER].startswith("SERVE_REPLICA::")
        assert statuses == [200, 200, 200, 422, 404]
        assert "aiforge_requests_total" in remote.get("/metrics").text


def test_requests_spread_over_two_replicas_on_different_nodes(served: RayServing, german: Any,
                                                              german_records: list[dict[str, Any]]) -> None:
    # Ray's proxy prefers the replica on its own node while that one has room (max_ongoing_requests 16):
    # 24 clients at once fill it, and the rest go to the worker node's replica.
    replicas: Counter[str] = Counter()
    outcomes = _hammer(served.url, german.export.record.name, german_records, threads=24, seconds=3.0,
                       replicas=replicas)
    assert set(outcomes) <= {"200", "503"} and outcomes["200"] > 0, outcomes
    actors = _replica_actors()
    assert len(replicas) == 2 and min(replicas.values()) >= 5, replicas
    assert len({actors[r].node_id for r in replicas}) == 2, {r: actors[r].node_id for r in replicas}


def _hammer(url: str, name: str, records: list[dict[str, Any]], *, threads: int, seconds: float,
            replicas: Counter[str] | None = None) -> Counter[str]:
    """``threads`` clients posting for ``seconds``; counts of outcomes: a status, ``503-no-retry-after`` or ``lost``
    (and in ``replicas``, the 200s each replica answered)."""
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client_loop(k: int) -> None:
        with httpx.Client() as client:
            while time.monotonic() < deadline:
                try:
                    answer = _predict(client, url, name, records[k % len(records):k % len(records) + 1])
                    key = str(answer.status_code)
                    if replicas is not None and answer.status_code == 200:
                        with lock:
                            replicas[answer.headers[REPLICA_HEADER]] += 1
                    if answer.status_code == 503 and "retry-after" not in answer.headers:
                        key = "503-no-retry-after"
                except httpx.HTTPError:
                    key = "lost"  # no HTTP answer: dropped connection or a hang past the 30 s timeout
                with lock:
                    outcomes[key] += 1

    workers = [threading.Thread(target=client_loop, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=seconds + 60)
    assert not any(w.is_alive() for w in workers), "a client hung"
    return outcomes


def test_over_capacity_answers_503_with_retry_after(served: RayServing, german: Any,
                                                    german_records: list[dict[str, Any]]) -> None:
    # 2 replicas x 16 ongoing + 8 queued = 40 requests at once; a burst of 160 must be refused in part,
    # at once, with Retry-After (never queued without bound), and the server still answers afterwards.
    url = f"{served.url}/v1/models/{german.export.record.name}/predict"

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(limits=limits, timeout=60.0) as client:
            return await asyncio.gather(*(client.post(url, json={"inputs": german_records[:1]}) for _ in range(160)))

    answers = asyncio.run(burst())
    statuses = Counter(a.status_code for a in answers)
    assert set(statuses) <= {200, 503} and statuses[200] >= 40 and statuses[503] > 0, statuses
    assert all(a.headers.get("retry-after") == "1" for a in answers if a.status_code == 503)
    with httpx.Client() as client:
        assert _predict(client, served.url, german.export.record.name, german_records[:1]).status_code == 200


def test_killing_a_replica_under_load_loses_no_request(served: RayServing, german: Any, ray_cluster: Any,
                                                       german_records: list[dict[str, Any]]) -> None:
    name = german.export.record.name
    worker_node = ray_cluster.worker.node_id
    victim = next(a for a in _replica_actors().values() if a.node_id == worker_node)
    result: dict[str, Counter[str]] = {}
    load = threading.Thread(target=lambda: result.update(
        outcomes=_hammer(served.url, name, german_records, threads=12, seconds=8.0)))
    load.start()
    time.sleep(2.0)
    os.kill(victim.pid, signal.SIGKILL)
    load.join(timeout=120)
    outcomes = result["outcomes"]
    print(f"replica kill under load: {dict(outcomes)}")
    assert outcomes["lost"] == 0 and outcomes["503-no-retry-after"] == 0, outcomes
    assert set(outcomes) <= {"200", "503"}, outcomes
    assert outcomes["200"] > 100, outcomes
    # Recovery: Ray starts a replacement replica, and under load both replicas answer again.
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and len(set(_replica_actors()) - {victim.name}) < 2:
        time.sleep(0.5)
    replicas: Counter[str] = Counter()
    after = _hammer(served.url, name, german_records, threads=24, seconds=3.0, replicas=replicas)
    assert set(after) <= {"200", "503"} and victim.name not in replicas and len(replicas) == 2, (after, replicas)

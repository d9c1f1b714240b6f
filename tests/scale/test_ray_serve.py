"""``serve --backend ray`` on a real two-node cluster: same answers as in-process, replicas on both nodes,
503 + Retry-After (and a JSON body) over capacity, and a replica killed under load costs no request. The
cluster's ingress is the default, HAProxy (``AIFORGE_TEST_RAY_INGRESS=proxy``: Ray's Python proxy)."""

from __future__ import annotations

import asyncio
import glob
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from scale_helpers import INGRESS, SERVE_BATCH, SERVE_MAX_QUEUED

import aiforge
from aiforge.scale.options import ScaleOptions
from aiforge.scale.replica import REPLICA_HEADER
from aiforge.scale.serving import RayServing, start_ray_serve
from aiforge.serve.app import create_app
from aiforge.serve.config import ServerConfig
from aiforge.serve.loadgen import free_port

pytestmark = pytest.mark.slow
REPLICA_CPUS = 2.0  # the head has 3 logical CPUs and the worker 2: one replica fits on each node


@pytest.fixture(scope="module")
def served(ray_cluster: Any, german: Any) -> Iterator[RayServing]:
    """The German credit bundle on Ray Serve: 2 replicas of 2 CPUs each, so one per node."""
    # small batches, so max_ongoing_requests (2 x 8 per replica) + max_queued_requests (8) is a small capacity
    config = ServerConfig(port=free_port(), max_batch_size=SERVE_BATCH, access_log=False)
    options = ScaleOptions(replicas=2, cpus_per_replica=REPLICA_CPUS, max_queued_requests=SERVE_MAX_QUEUED,
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
    # 32 clients at once fill it, and the rest go to the worker node's replica.
    load = _load(served.url, german.export.record.name, german_records, clients=32, total=160)
    assert set(load.outcomes) <= {"200", "503"} and load.outcomes["200"] > 0, load.outcomes
    actors = _replica_actors()
    assert len(load.replicas) == 2 and min(load.replicas.values()) >= 5, load.replicas
    assert len({actors[r].node_id for r in load.replicas}) == 2, {r: actors[r].node_id for r in load.replicas}


@dataclass
class Load:
    """What a load run saw: outcomes (a status, ``503-no-retry-after`` or ``lost``) and 200s per replica."""

    outcomes: Counter[str] = field(default_factory=Counter)
    replicas: Counter[str] = field(default_factory=Counter)
    after_kill: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)  # what each lost request raised
    killed_at: float = 0.0  # wall clock, to match HAProxy's log


def _load(url: str, name: str, records: list[dict[str, Any]], *, clients: int, total: int,
          kill_at: int | None = None, kill: Callable[[], None] | None = None) -> Load:
    """``clients`` concurrent clients sending ``total`` requests in all (count-bound, not time-bound, so a
    slow machine changes how long it takes, not what it tests); ``kill`` runs once ``kill_at`` answers came."""
    load, sent, killed, killed_at = Load(), [0], [False], [0.0]

    async def client_loop(client: httpx.AsyncClient, k: int) -> None:
        while sent[0] < total:
            sent[0] += 1
            started = time.time()
            try:
                answer = await client.post(f"{url}/v1/models/{name}/predict",
                                           json={"inputs": records[k % len(records):k % len(records) + 1]})
                key = str(answer.status_code)
                if answer.status_code == 503 and "retry-after" not in answer.headers:
                    key = "503-no-retry-after"
                if answer.status_code == 200:
                    load.replicas[answer.headers[REPLICA_HEADER]] += 1
            except httpx.HTTPError as exc:
                key = "lost"  # no HTTP answer: a dropped connection, or a hang past the 60 s timeout
                when = f", {time.monotonic() - killed_at[0]:.1f} s after the kill" if killed[0] else ", before the kill"
                when += f", sent at {started:.3f}, failed at {time.time():.3f}"  # wall clock, as HAProxy's log
                load.errors[f"{type(exc).__name__} ({exc}){when}"] += 1
            load.outcomes[key] += 1
            if killed[0]:
                load.after_kill[key] += 1
            if kill is not None and not killed[0] and sum(load.outcomes.values()) >= (kill_at or 0):
                killed[0], killed_at[0] = True, time.monotonic()
                load.killed_at = time.time()
                kill()

    async def main() -> None:
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(limits=limits, timeout=60.0) as client:
            await asyncio.wait_for(asyncio.gather(*(client_loop(client, k) for k in range(clients))), timeout=600)

    asyncio.run(main())
    return load


def test_over_capacity_answers_503_with_retry_after(served: RayServing, german: Any,
                                                    german_records: list[dict[str, Any]]) -> None:
    # 2 replicas x 16 ongoing + 8 queued = 40 requests at once; a burst of 160 must be refused in part,
    # at once, with Retry-After and a JSON body (never queued without bound), and the server still answers
    # afterwards. One request in four lists the models: an OpenAI route, whose refusal is OpenAI's error object.
    name = german.export.record.name
    url = f"{served.url}/v1/models/{name}/predict"

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(limits=limits, timeout=60.0) as client:
            return await asyncio.gather(*(client.get(f"{served.url}/v1/models") if k % 4 == 3 else
                                          client.post(url, json={"inputs": german_records[:1]}) for k in range(160)))

    answers = asyncio.run(burst())
    statuses = Counter(a.status_code for a in answers)
    # (HAProxy counts its queue as it refuses, so a few less than 40 may be answered: at least one replica's worth)
    assert set(statuses) <= {200, 503} and statuses[200] >= 2 * SERVE_BATCH and statuses[503] > 0, statuses
    refused = [a for a in answers if a.status_code == 503]
    assert all(a.headers.get("retry-after") == "1" for a in refused), {(a.request.url.path, a.text) for a in refused}
    if INGRESS == "haproxy":  # Ray's proxy answers its own 503 body
        assert all(a.headers["content-type"].startswith("application/json") and "error" in a.json()
                   for a in refused), {(a.request.url.path, str(a.headers), a.text) for a in refused}
        errors = [a.json()["error"] for a in refused]
        assert any(isinstance(e, str) for e in errors), errors  # the predict route's shape
        # the list route refused too (most runs): OpenAI's shape (one run saw one in the plain shape: docs/scale.md)
        listed = [a.json()["error"] for a in refused if a.request.url.path == "/v1/models"]
        assert not listed or any(isinstance(e, dict) and e["code"] == "service_unavailable" for e in listed), listed
    with httpx.Client() as client:
        assert _predict(client, served.url, name, german_records[:1]).status_code == 200


def test_the_haproxy_config_holds_aiforge_limits(served: RayServing) -> None:
    # Where aiforge's lines ride in on Ray's template (aiforge.scale.haproxy), in the config HAProxy runs:
    # if Ray renders its template differently, this fails.
    folder = os.path.dirname(os.environ.get("RAY_SERVE_HAPROXY_CONFIG_FILE_LOC", ""))
    configs = glob.glob(os.path.join(folder, "*", "haproxy.cfg")) if folder else []
    if INGRESS == "proxy":
        assert not configs and os.environ["RAY_SERVE_ENABLE_HA_PROXY"] == "0"
        return
    assert configs, folder
    backends = []  # one HAProxy per node: the head's routes to the application's replicas
    for path in configs:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        defaults = text.partition("\ndefaults\n")[2].partition("\nfrontend ")[0]
        assert "\n    option http-buffer-request\n" in defaults, defaults
        backends += [b for b in text.split("\nbackend ")[1:] if "\n    server " in b]
    assert backends, configs
    for backend in backends:
        limits = f" maxconn {2 * SERVE_BATCH}\n"
        assert limits in backend and backend.index(limits) < backend.index("\n    server "), backend
        assert f"http-request deny deny_status 503 if {{ queue ge {SERVE_MAX_QUEUED} }}" in backend, backend
        assert "\n    default-server check\n" in backend and "\n    option http-server-close\n" in backend, backend


def test_killing_a_replica_under_load_loses_no_request(served: RayServing, german: Any, ray_cluster: Any,
                                                       german_records: list[dict[str, Any]]) -> None:
    name = german.export.record.name
    head_node = ray_cluster.cluster.head_node.node_id
    # The replica beside the proxy takes most of the traffic: that is the one to kill.
    victim = next(a for a in _replica_actors().values() if a.node_id == head_node)
    load = _load(served.url, name, german_records, clients=24, total=600, kill_at=60,
                 kill=lambda: os.kill(victim.pid, signal.SIGKILL))
    run = {"ingress": INGRESS, "sent": sum(load.outcomes.values()), "outcomes": dict(load.outcomes),
           "after_kill": dict(load.after_kill), "per_replica": dict(load.replicas), "lost_as": dict(load.errors),
           "killed_pid": victim.pid, "killed_at": round(load.killed_at, 3), "loadavg_at_end": os.getloadavg()}
    print(f"replica kill under load: {json.dumps(run)}")
    if os.environ.get("AIFORGE_TEST_FAULT_RECORD"):  # one JSON line per run, for bench/results/scale.json
        with open(os.environ["AIFORGE_TEST_FAULT_RECORD"], "a", encoding="utf-8") as fh:
            fh.write(json.dumps(run) + "\n")
    assert load.outcomes["lost"] == 0 and load.outcomes["503-no-retry-after"] == 0, load.outcomes
    assert set(load.outcomes) <= {"200", "503"}, load.outcomes
    assert sum(load.after_kill.values()) >= 500 and load.after_kill["200"] > 0, load.after_kill
    # Recovery: Ray starts a replacement replica, and under load both live replicas answer again.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(set(_replica_actors()) - {victim.name}) < 2:
        time.sleep(0.5)
    # The new replica answers once it has loaded the bundle and the ingress routes to it (HAProxy: after
    # its next reload), so load rounds run until both replicas answer, or the deadline passes.
    while True:
        after = _load(served.url, name, german_records, clients=32, total=160)
        assert set(after.outcomes) <= {"200", "503"}, after.outcomes
        if len(after.replicas) == 2 or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    assert victim.name not in after.replicas and len(after.replicas) == 2, after.replicas

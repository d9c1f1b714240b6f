"""A real two-node Ray cluster on this machine (a head and a worker, separate processes), one per session.

Small numbers on purpose: the CPUs are logical (the machine has two cores), the object stores 200 MB
each, no dashboard. The worker node is the one the fault tests kill; ``add_worker`` brings a new one.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from scale_helpers import BAD_ROWS, BATCH_ROWS, INGRESS, SERVE_BATCH, SERVE_MAX_QUEUED, write_csv_rows

from aiforge.scale.cluster import PROXY_CALLBACK, PROXY_CALLBACK_ENV, ingress_env, local_ingress_env

OBJECT_STORE = 200 * 1024 * 1024
HEAD_CPUS, WORKER_CPUS = 3, 2


@dataclass
class RayCluster:
    """The running cluster: Ray's ``Cluster`` object and its worker node."""

    cluster: Any
    worker: Any

    @property
    def address(self) -> str:
        return str(self.cluster.address)

    def add_worker(self) -> Any:
        """Start another worker node (after one was killed) and wait for it to join."""
        self.worker = self.cluster.add_node(num_cpus=WORKER_CPUS, object_store_memory=OBJECT_STORE)
        self.cluster.wait_for_nodes()
        return self.worker


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    """A head node and one worker node, joined by this test process; shut down at the end of the session."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_AUTH_MODE", "disabled")  # tests only: a loopback cluster of this session's own processes
        mp.setenv("RAY_DEDUP_LOGS", "0")
        mp.setenv(PROXY_CALLBACK_ENV, PROXY_CALLBACK)  # as `connect` sets them for a cluster it starts
        # The default ingress; AIFORGE_TEST_RAY_INGRESS=proxy runs these tests on the other (docs/scale.md).
        # HAProxy's limits are the cluster's: those of the deployment test_ray_serve.py runs.
        env = {**ingress_env(INGRESS, max_ongoing=2 * SERVE_BATCH, max_queued=SERVE_MAX_QUEUED),
               **local_ingress_env(INGRESS)}
        for key, value in env.items():
            mp.setenv(key, value)
        log_path = os.environ.get("AIFORGE_TEST_HAPROXY_LOG")
        if INGRESS == "haproxy" and log_path:  # HAProxy's syslog lines, stamped on arrival, for a fault run
            mp.setenv("RAY_SERVE_HAPROXY_LOG_TARGET", f"127.0.0.1:{_syslog_to(Path(log_path))}")
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": HEAD_CPUS, "object_store_memory": OBJECT_STORE, "include_dashboard": False})
        worker = cluster.add_node(num_cpus=WORKER_CPUS, object_store_memory=OBJECT_STORE)
        cluster.wait_for_nodes()
        import ray

        ray.init(address=cluster.address, log_to_driver=False)
        try:
            yield RayCluster(cluster=cluster, worker=worker)
        finally:
            ray.shutdown()
            cluster.shutdown()


def _syslog_to(path: Path) -> int:
    """A UDP syslog listener on a free loopback port appending each datagram, with its arrival time, to ``path``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))

    def listen() -> None:
        with path.open("a", encoding="utf-8") as fh:
            while True:
                data = sock.recv(65536)
                fh.write(f"{time.time():.3f} {data.decode(errors='replace').rstrip()}\n")
                fh.flush()

    threading.Thread(target=listen, daemon=True).start()
    return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def german_records(german: Any) -> list[dict[str, Any]]:
    """Test rows of the German credit bundle as records (label dropped), what clients and files hold."""
    frame = german.result.data.test.frame.drop(columns=["credit"], errors="ignore")
    rows: list[dict[str, Any]] = json.loads(frame.head(50).to_json(orient="records"))
    return rows


@pytest.fixture(scope="session")
def batch_csv(german_records: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CSV of 100k records with an ``id`` column; the rows in ``BAD_ROWS`` hold a word in a numeric field."""
    path = tmp_path_factory.mktemp("batch-in") / "records.csv"
    return write_csv_rows(path, german_records, rows=BATCH_ROWS, bad_rows=BAD_ROWS)

"""Importing Ray on demand and connecting to a cluster (an existing one, or a local one started here)."""

from __future__ import annotations

import importlib
import os
import socket
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

from aiforge.errors import AiforgeError

__all__ = ["LEAN_ENV", "PIP_HINT", "PROXY_CALLBACK", "PROXY_CALLBACK_ENV", "connect", "ingress_env", "require_ray"]

PIP_HINT = "pip install 'aiforge[ray]' (ray[serve,data]==2.60.0)"
PROXY_CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"  # Ray's hook for the proxy's middlewares
PROXY_CALLBACK = "aiforge.scale.proxy:middlewares"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ingress_env(ingress: str) -> dict[str, str]:
    """The environment Ray Serve's processes need for ``ingress`` (read once, when each one starts).

    ``proxy`` (the default): Ray's Python HTTP proxy actor, which hands each request to a replica by an
    actor call; a request lost with its replica becomes 503 + Retry-After (:mod:`aiforge.scale.proxy`).
    ``haproxy``: Ray's high-throughput mode (``RAY_SERVE_ENABLE_HA_PROXY`` + ``RAY_SERVE_THROUGHPUT_OPTIMIZED``):
    HAProxy (C) listens on the HTTP port and forwards to each replica's own HTTP server, so no Python
    proxy sits in the request path. A request lost with its replica is retried on another one, but
    HAProxy reloads when the replicas change and may drop a keep-alive connection then (docs/scale.md);
    its stats and metrics listeners (on all interfaces: Ray's template) get free ports, not 8404 and 9101,
    and its config and admin socket a folder of their own, not Ray's shared /tmp/haproxy-serve.
    """
    if ingress == "proxy":
        return {"RAY_SERVE_ENABLE_HA_PROXY": "0", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "0"}
    return {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
            # A request whose replica died before answering is sent to another one (predictions are
            # idempotent), not dropped: HAProxy's L7 retries.
            "RAY_SERVE_HAPROXY_RETRY_ON": HAPROXY_RETRY_ON, "RAY_SERVE_HAPROXY_RETRIES": "3",
            "RAY_SERVE_HAPROXY_STATS_PORT": str(_free_port()), "RAY_SERVE_HAPROXY_METRICS_PORT": str(_free_port()),
            # Ray's fallback proxy (requests HAProxy cannot route) would take the fixed ports 8500 and 9500.
            "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(_free_port()),
            "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(_free_port()),
            # HAProxyManager's readiness check: 5 s by default, which a loaded 2-core machine misses (then
            # the controller kills and restarts it, over and over).
            "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "30",
            # Ray's defaults are fixed paths under /tmp/haproxy-serve, which any other cluster here would share.
            **_haproxy_files()}


# HAProxy retries a request only if it holds the whole request when the server fails: without
# ``option http-buffer-request`` it forwards the headers before the body has arrived, and a request whose
# replica dies is then answered 502 (a first request on its connection) or its connection is closed with
# no answer (a later one: HAProxy leaves the retry to the client). Ray 2.60's HAProxy template has no
# setting for that option (``HAProxyConfig.custom_defaults`` is never rendered), so the line rides in on
# the ``retry-on`` value, which the template writes verbatim into its ``defaults`` section.
HAPROXY_RETRY_ON = "conn-failure empty-response\n    option http-buffer-request"


# What a local cluster started here turns off: Ray's own metrics (recorded in every Ray process and pushed
# to the metrics agent; aiforge's /metrics is each replica's own), usage stats, and HAProxy's metrics
# collector. On 2 cores each CPU-second these spend is taken from the model (bench/scale.py measures
# both; set a variable yourself to keep Ray's default).
LEAN_ENV = {"RAY_enable_metrics_collection": "0", "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0"}


def _haproxy_files() -> dict[str, str]:
    """HAProxy's config, admin socket and server-state files in a folder of this cluster's own."""
    folder = Path(tempfile.mkdtemp(prefix="aiforge-haproxy-"))
    return {"RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(folder / "haproxy.cfg"),
            "RAY_SERVE_HAPROXY_SOCKET_PATH": str(folder / "admin.sock"),
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(folder),
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(folder / "server-state")}


def require_ray(module: str = "ray") -> ModuleType:
    """``import module`` (ray, ray.serve, ray.data), or an error naming the pip command.

    Raises:
        AiforgeError: Ray is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise AiforgeError(f"--backend ray needs Ray, which is not installed: {PIP_HINT}.") from exc


def connect(address: str | None, *, num_cpus: int | None = None, ingress: str = "proxy") -> Any:
    """Join the cluster at ``address`` (``auto``, ``ray://…`` or ``HOST:PORT``), else start a local one.

    A cluster already joined by this process is reused. A local cluster's Serve processes get
    :func:`ingress_env` (an existing cluster keeps the environment it was started with). Returns Ray's
    context object.

    Raises:
        AiforgeError: Ray is not installed, or the cluster cannot be reached.
    """
    ray = require_ray()
    if ray.is_initialized():
        return ray.get_runtime_context()
    kwargs: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
    if address is None:  # "local": a new cluster, never one some other process started on this machine
        kwargs.update(include_dashboard=False, num_cpus=num_cpus)
        # The proxies of a cluster started here answer a request lost with its replica 503 + Retry-After.
        os.environ.setdefault(PROXY_CALLBACK_ENV, PROXY_CALLBACK)
        for key, value in {**LEAN_ENV, **ingress_env(ingress)}.items():  # before ray.init: its processes inherit them
            os.environ.setdefault(key, value)
    try:
        return ray.init(address=address or "local", **kwargs)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise AiforgeError(f"cannot join the Ray cluster at {address!r} ({exc}); start one with "
                           "`ray start --head` or leave out --ray-address to start a local one.") from exc

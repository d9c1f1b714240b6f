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
from aiforge.scale.haproxy import haproxy_config_env

__all__ = ["PIP_HINT", "PROXY_CALLBACK", "PROXY_CALLBACK_ENV", "connect", "ingress_env", "local_ingress_env",
           "require_ray"]

PIP_HINT = "pip install 'aiforge[ray]' (ray[serve,data]==2.60.0)"
PROXY_CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"  # Ray's hook for the proxy's middlewares
PROXY_CALLBACK = "aiforge.scale.proxy:middlewares"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ingress_env(ingress: str, *, max_ongoing: int | None = None, max_queued: int = 256,
                retry_after_s: float = 1.0) -> dict[str, str]:
    """The environment Ray Serve's processes need for ``ingress`` (read once, when each one starts).

    ``proxy`` (the default): Ray's Python HTTP proxy actor, which hands each request to a replica by an actor
    call; a request lost with its replica becomes 503 + Retry-After (:mod:`aiforge.scale.proxy`).
    ``haproxy``: Ray's high-throughput mode (``RAY_SERVE_ENABLE_HA_PROXY`` +
    ``RAY_SERVE_THROUGHPUT_OPTIMIZED``): HAProxy (C) listens on the HTTP port and forwards to each replica's
    own HTTP server, so no Python proxy sits in the request path. aiforge's lines in its config
    (:mod:`aiforge.scale.haproxy`) give each replica at most ``max_ongoing`` requests (a deployment's
    ``max_ongoing_requests``; None: no limit), hold at most ``max_queued`` per application for at most
    1 s, refuse the rest 503 + Retry-After (``retry_after_s``) with a JSON body, and replay a request lost
    with its replica on another one.
    """
    if ingress == "proxy":
        return {"RAY_SERVE_ENABLE_HA_PROXY": "0", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "0"}
    return {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
            **haproxy_config_env(max_ongoing=max_ongoing, max_queued=max_queued, retry_after_s=retry_after_s),
            # HAProxyManager's readiness check: 5 s by default, which a loaded 2-core machine misses (then
            # the controller kills and restarts it, over and over).
            "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "30"}


def local_ingress_env(ingress: str) -> dict[str, str]:
    """What a cluster sharing its machine with others needs on top of :func:`ingress_env`.

    HAProxy's stats and metrics listeners (on all interfaces: Ray's template) get free ports, not 8404 and
    9101, Ray's fallback proxy not 8500 and 9500, and HAProxy's config and admin socket a folder of their
    own, not Ray's shared /tmp/haproxy-serve.
    """
    if ingress == "proxy":
        return {}
    return {"RAY_SERVE_HAPROXY_STATS_PORT": str(_free_port()), "RAY_SERVE_HAPROXY_METRICS_PORT": str(_free_port()),
            "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(_free_port()),
            "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(_free_port()), **_haproxy_files()}


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


def connect(address: str | None, *, num_cpus: int | None = None, ingress: str | None = None,
            max_ongoing: int | None = None, max_queued: int = 256, retry_after_s: float = 1.0) -> Any:
    """Join the cluster at ``address`` (``auto``, ``ray://…`` or ``HOST:PORT``), else start a local one.

    A cluster already joined by this process is reused. A local cluster's Serve processes get
    :func:`ingress_env` for ``ingress`` and the limits given (None: no Serve, e.g. a batch job; an existing
    cluster keeps the environment it was started with). Returns Ray's context object.

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
        env = {} if ingress is None else {
            **ingress_env(ingress, max_ongoing=max_ongoing, max_queued=max_queued, retry_after_s=retry_after_s),
            **local_ingress_env(ingress)}
        for key, value in env.items():  # before ray.init: its processes inherit them
            os.environ.setdefault(key, value)
    try:
        return ray.init(address=address or "local", **kwargs)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise AiforgeError(f"cannot join the Ray cluster at {address!r} ({exc}); start one with "
                           "`ray start --head` or leave out --ray-address to start a local one.") from exc

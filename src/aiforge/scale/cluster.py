"""Importing Ray on demand and connecting to a cluster (an existing one, or a local one started here)."""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any

from aiforge.errors import AiforgeError

__all__ = ["PIP_HINT", "PROXY_CALLBACK", "PROXY_CALLBACK_ENV", "connect", "require_ray"]

PIP_HINT = "pip install 'aiforge[ray]' (ray[serve,data]==2.60.0)"
PROXY_CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"  # Ray's hook for the proxy's middlewares
PROXY_CALLBACK = "aiforge.scale.proxy:middlewares"


def require_ray(module: str = "ray") -> ModuleType:
    """``import module`` (ray, ray.serve, ray.data), or an error naming the pip command.

    Raises:
        AiforgeError: Ray is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise AiforgeError(f"--backend ray needs Ray, which is not installed: {PIP_HINT}.") from exc


def connect(address: str | None, *, num_cpus: int | None = None) -> Any:
    """Join the cluster at ``address`` (``auto``, ``ray://…`` or ``HOST:PORT``), else start a local one.

    A cluster already joined by this process is reused. Returns Ray's context object.

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
    try:
        return ray.init(address=address or "local", **kwargs)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise AiforgeError(f"cannot join the Ray cluster at {address!r} ({exc}); start one with "
                           "`ray start --head` or leave out --ray-address to start a local one.") from exc

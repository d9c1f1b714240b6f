"""Serving bundles on Ray Serve: one deployment per bundle, the in-process server's routes in each replica."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from aiforge.bundle.format import read_manifest
from aiforge.bundle.registry import Registry
from aiforge.errors import AiforgeError
from aiforge.scale.cluster import connect, require_ray
from aiforge.scale.options import ScaleOptions
from aiforge.serve.config import ServerConfig

__all__ = ["RayServing", "serve_ray", "start_ray_serve"]

log = logging.getLogger("aiforge.server")


@dataclass
class RayServing:
    """Bundles deployed on Ray Serve: the proxy's URL and, per bundle, its Serve application and route prefix."""

    url: str
    apps: dict[str, str] = field(default_factory=dict)  # bundle name -> Serve application name
    prefixes: dict[str, str] = field(default_factory=dict)  # bundle name -> route prefix ("" when alone)
    started_cluster: bool = False

    def stop(self) -> None:
        """Delete the Serve applications started here (and the local cluster, if this process started it)."""
        ray = require_ray()
        serve = require_ray("ray.serve")
        for app in self.apps.values():
            serve.delete(app)
        if self.started_cluster:
            serve.shutdown()
            ray.shutdown()


def _named_bundles(bundles: Sequence[str | Path], home: str | Path | None) -> dict[str, Path]:
    """Each bundle's name and verified folder (the folder travels to replicas; they verify it again)."""
    registry = Registry(home)
    out: dict[str, Path] = {}
    for bundle in bundles:
        path = registry.resolve(bundle).resolve()
        name = read_manifest(path).name
        if name in out:
            raise AiforgeError(f"two bundles are named {name!r}; serve one version per name")
        out[name] = path
    return out


def _wait_ready(url: str, *, timeout: float) -> None:
    """Poll ``url`` until 200; an error naming the last answer otherwise."""
    deadline, last = time.monotonic() + timeout, "no answer"
    while time.monotonic() < deadline:
        try:
            answer = httpx.get(url, timeout=5.0)
            if answer.status_code == 200:
                return
            last = f"{answer.status_code} {answer.text[:200]}"
        except httpx.HTTPError as exc:
            last = str(exc) or type(exc).__name__
        time.sleep(0.25)
    raise AiforgeError(f"Ray Serve did not become ready at {url} in {timeout:g} s (last answer: {last}).")


def _check_fits(options: ScaleOptions, *, bundles: int) -> None:
    """Refuse replicas a local cluster can never place (Ray would wait for them forever).

    Raises:
        AiforgeError: more CPUs asked for than the local cluster has.
    """
    replicas = options.autoscale[0] if options.autoscale else options.replicas
    need = bundles * replicas * options.cpus_per_replica
    have = float(require_ray().cluster_resources().get("CPU", 0))
    if need > have:
        raise AiforgeError(f"{bundles} bundle(s) x {replicas} replica(s) x {options.cpus_per_replica:g} CPU need "
                           f"{need:g} CPUs; this machine's local Ray cluster has {have:g}. Lower --replicas or "
                           "--replica-cpus, or join a larger cluster with --ray-address.")


def start_ray_serve(bundles: Sequence[str | Path], *, config: ServerConfig | None = None,
                    options: ScaleOptions | None = None, home: str | Path | None = None,
                    ready_timeout: float = 300.0) -> RayServing:
    """Deploy each bundle as a Ray Serve application and return once every one answers ready.

    One bundle is served at ``/`` (the in-process server's paths exactly); several are each served under
    ``/NAME`` (Ray Serve routes an HTTP path to one application).

    Raises:
        AiforgeError: Ray is missing, the cluster is unreachable, a bundle is unknown, or a deployment
            never became ready.
    """
    cfg, opts = config or ServerConfig(), options or ScaleOptions()
    if cfg.threads is None:  # a replica's onnxruntime threads follow the CPUs Ray gives it
        cfg = cfg.model_copy(update={"threads": max(1, int(opts.cpus_per_replica))})
    named = _named_bundles(bundles, home)
    started = not require_ray().is_initialized() and opts.ray_address is None
    deployment_options = opts.deployment_options(cfg)
    connect(opts.ray_address, ingress=opts.ray_ingress, max_ongoing=deployment_options["max_ongoing_requests"],
            max_queued=opts.max_queued_requests, retry_after_s=opts.retry_after_s)
    if started:
        _check_fits(opts, bundles=len(named))
    serve = require_ray("ray.serve")
    # lazy: the deployment class imports ray.serve at import time
    from aiforge.scale.replica import BundleReplica

    serve.start(http_options={"host": cfg.host, "port": cfg.port})
    serving = RayServing(url=f"http://{cfg.host}:{cfg.port}", started_cluster=started)
    for name, path in named.items():
        prefix = "" if len(named) == 1 else f"/{name}"
        app_name = f"aiforge-{name}"
        deployment = serve.deployment(BundleReplica).options(name=name, **deployment_options)
        try:
            serve.run(deployment.bind(str(path), cfg.model_dump(mode="json")), name=app_name,
                      route_prefix=prefix or "/")
        except Exception as exc:  # Ray raises its own types for a deployment that fails to start
            raise AiforgeError(f"{name}: the Ray Serve deployment failed to start ({exc}).") from exc
        serving.apps[name], serving.prefixes[name] = app_name, prefix
        _wait_ready(f"{serving.url}{prefix}/v2/health/ready", timeout=ready_timeout)
    return serving


def serve_ray(bundles: Sequence[str | Path], *, config: ServerConfig | None = None,
              options: ScaleOptions | None = None, home: str | Path | None = None) -> None:
    """Serve ``bundles`` on Ray Serve until SIGINT/SIGTERM, then delete the deployments.

    Raises:
        AiforgeError: as :func:`start_ray_serve`.
    """
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    serving = start_ray_serve(bundles, config=config, options=options, home=home)
    stop = threading.Event()
    previous: dict[signal.Signals, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, lambda *_: stop.set())
    for name, prefix in serving.prefixes.items():
        log.info("serving %s on Ray at %s%s/", name, serving.url, prefix)
    try:
        stop.wait()
    finally:
        serving.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)

"""``aiforge deploy --target kuberay``: a KubeRay RayService manifest and a Dockerfile for one bundle.

The image holds pinned dependencies (this environment's exact versions), the aiforge package, and the
bundle, verified at build time (``aiforge verify``) and again by every replica when it loads it; it runs
as a non-root user. The RayService serves the bundle with the same deployment as ``aiforge serve
--backend ray`` (:func:`aiforge.scale.replica.build_app`).
"""

from __future__ import annotations

import importlib.metadata
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

import aiforge
from aiforge.bundle.format import read_manifest
from aiforge.bundle.registry import Registry
from aiforge.errors import AiforgeError
from aiforge.scale.cluster import PROXY_CALLBACK, PROXY_CALLBACK_ENV, ingress_env
from aiforge.scale.options import ScaleOptions
from aiforge.serve.config import ServerConfig

__all__ = ["BUNDLE_DIR", "IMAGE_PACKAGES", "KubeRayFiles", "deploy_kuberay"]

BUNDLE_DIR = "/opt/aiforge/bundle"
RAY_VERSION = "2.60.0"
UID = 1000
# What a serving image needs (no torch: replicas run the torch-free Runtime), pinned to this environment.
IMAGE_PACKAGES = ("numpy", "onnxruntime", "tokenizers", "pandas", "pyarrow", "pydantic", "pyyaml", "typer", "rich",
                  "fastapi", "uvicorn", "httpx", "prometheus-client", "pillow", "python-multipart")


@dataclass(frozen=True)
class KubeRayFiles:
    """The files written: the manifest, the Dockerfile and the build context."""

    manifest: Path
    dockerfile: Path
    context: Path
    image: str


def _pins() -> list[str]:
    pins = []
    for package in IMAGE_PACKAGES:
        try:
            pins.append(f"{package}=={importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            continue  # optional for this bundle's kind (e.g. pillow without image bundles)
    return [*pins, f"ray[serve]=={RAY_VERSION}"]


def _dockerfile() -> str:
    return f"""\
# Serving image for one aiforge bundle on KubeRay (written by `aiforge deploy --target kuberay`).
FROM rayproject/ray:{RAY_VERSION}-py311-cpu
USER root
RUN id -u {UID} >/dev/null 2>&1 || useradd --create-home --uid {UID} aiforge
COPY requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt
COPY --chown={UID}:{UID} aiforge /opt/aiforge/src/aiforge
COPY --chown={UID}:{UID} bundle {BUNDLE_DIR}
ENV PYTHONPATH=/opt/aiforge/src HF_HUB_OFFLINE=1 AIFORGE_BUNDLE={BUNDLE_DIR}
# The bundle's manifest and every file's sha256 are checked here, and again by each replica at start-up.
RUN python -m aiforge.cli verify {BUNDLE_DIR}
USER {UID}
"""


def _container(name: str, image: str, cpus: float, memory: str, ports: list[dict[str, Any]],
               *, env: dict[str, str]) -> dict[str, Any]:
    # A pod is its own machine: HAProxy keeps Ray's fixed ports and paths there (no local_ingress_env).
    return {"name": name, "image": image, "ports": ports,
            "env": [{"name": PROXY_CALLBACK_ENV, "value": PROXY_CALLBACK},
                    *({"name": k, "value": v} for k, v in env.items())],
            "securityContext": {"runAsNonRoot": True, "runAsUser": UID, "allowPrivilegeEscalation": False},
            "resources": {"requests": {"cpu": str(cpus), "memory": memory},
                          "limits": {"cpu": str(cpus), "memory": memory}}}


def rayservice(name: str, image: str, *, options: ScaleOptions, config: ServerConfig, workers: int) -> dict[str, Any]:
    """The RayService object (a dict ready for YAML) serving the bundle baked into ``image``."""
    deployment: dict[str, Any] = {"name": name, **{k: v for k, v in options.deployment_options(config).items()
                                                  if k not in ("num_replicas", "autoscaling_config")}}
    if options.autoscale is None:
        deployment["num_replicas"] = options.replicas
    else:
        deployment["autoscaling_config"] = options.deployment_options(config)["autoscaling_config"]
    application = {"name": f"aiforge-{name}", "route_prefix": "/",
                   "import_path": "aiforge.scale.replica:build_app",
                   "args": {"name": name, "bundle": BUNDLE_DIR,
                            "config": config.model_dump(mode="json", exclude_none=True)},
                   "deployments": [deployment]}
    env = ingress_env(options.ray_ingress, max_ongoing=deployment["max_ongoing_requests"],
                      max_queued=options.max_queued_requests, retry_after_s=options.retry_after_s)
    head = _container("ray-head", image, 1, "2Gi", [{"containerPort": 6379, "name": "gcs"},
                                                    {"containerPort": 8265, "name": "dashboard"},
                                                    {"containerPort": 8000, "name": "serve"}], env=env)
    worker = _container("ray-worker", image, max(1.0, options.cpus_per_replica), "2Gi", [], env=env)
    pod_security = {"runAsNonRoot": True, "runAsUser": UID, "fsGroup": UID}
    max_workers = max(workers, options.autoscale[1] if options.autoscale else options.replicas)
    return {
        "apiVersion": "ray.io/v1", "kind": "RayService",
        "metadata": {"name": f"aiforge-{name}", "labels": {"app.kubernetes.io/name": name,
                                                           "app.kubernetes.io/managed-by": "aiforge"}},
        "spec": {
            "serveConfigV2": yaml.safe_dump({"applications": [application]}, sort_keys=False),
            "rayClusterConfig": {
                "rayVersion": RAY_VERSION,
                "enableInTreeAutoscaling": options.autoscale is not None,
                "headGroupSpec": {"rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
                                  "template": {"spec": {"securityContext": pod_security, "containers": [head]}}},
                "workerGroupSpecs": [{"groupName": "replicas", "replicas": workers, "minReplicas": min(workers, 1),
                                      "maxReplicas": max_workers, "rayStartParams": {},
                                      "template": {"spec": {"securityContext": pod_security,
                                                            "containers": [worker]}}}],
            },
        },
    }


def deploy_kuberay(bundle: str | Path, *, output: str | Path, image: str | None = None,
                   options: ScaleOptions | None = None, config: ServerConfig | None = None, workers: int = 2,
                   home: str | Path | None = None) -> KubeRayFiles:
    """Write ``rayservice.yaml``, ``Dockerfile`` and the build context (bundle, aiforge, pins) to ``output``.

    Raises:
        AiforgeError: the bundle is unknown or fails verification, or ``output`` holds other files.
        BundleError: the bundle is corrupt (named file).
    """
    if workers < 1:
        raise AiforgeError(f"--workers must be at least 1, got {workers}.")
    path = Registry(home).resolve(bundle).resolve()
    manifest = read_manifest(path)  # verified: a corrupt bundle is never packaged
    out = Path(output)
    if out.exists() and any(out.iterdir()):
        raise AiforgeError(f"{out}: the folder is not empty; give a new or empty folder for the deploy files.")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(path, out / "bundle")
    shutil.copytree(Path(aiforge.__file__).parent, out / "aiforge", ignore=shutil.ignore_patterns("__pycache__"))
    (out / "requirements.txt").write_text("\n".join(_pins()) + "\n", encoding="utf-8")
    dockerfile = out / "Dockerfile"
    dockerfile.write_text(_dockerfile(), encoding="utf-8")
    tag = image or f"aiforge-{manifest.name}:{manifest.version}"
    cfg = config or ServerConfig()  # its host is unused there: Ray's proxy listens, on the pod's port 8000
    document = rayservice(manifest.name, tag, options=options or ScaleOptions(), config=cfg, workers=workers)
    manifest_file = out / "rayservice.yaml"
    manifest_file.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return KubeRayFiles(manifest=manifest_file, dockerfile=dockerfile, context=out, image=tag)

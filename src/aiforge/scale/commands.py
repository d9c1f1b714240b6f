"""The scale-out commands of the CLI: ``aiforge batch`` and ``aiforge deploy``; each parses and calls one function."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from aiforge.errors import AiforgeError
from aiforge.options import HomeOpt, out

__all__ = ["BackendOpt", "register"]

BackendOpt = Annotated[str, typer.Option("--backend", help="local (this process) or ray (Ray Serve / Ray Data; "
                                                          "needs pip install 'aiforge[ray]').")]
RayAddressOpt = Annotated[str | None, typer.Option("--ray-address", help="Join this Ray cluster (auto, HOST:PORT "
                                                   "or ray://…) [default: start a local one].")]


def batch(
    bundle: Annotated[str, typer.Argument(help="Bundle folder, NAME or NAME:VERSION.")],
    input: Annotated[str, typer.Option("--input", "-i", help="A CSV/JSONL/Parquet file, a quoted glob of them, or a "
                                       "folder (of tables, or of images for image bundles).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for predictions.parquet, rejects.jsonl "
                                         "and summary.json.")],
    backend: BackendOpt = "local",
    column: Annotated[str | None, typer.Option(help="Column holding each item [default: the text column the "
                                               "bundle was trained on; else each row is a record].")] = None,
    id_column: Annotated[str | None, typer.Option(help="Column copied to the predictions [default: id, if "
                                                  "present].")] = None,
    actors: Annotated[int, typer.Option(help="Runtime actors (--backend ray).", min=1)] = 2,
    batch_size: Annotated[int, typer.Option(help="Rows per model call.", min=1)] = 1024,
    cpus_per_actor: Annotated[float, typer.Option(help="CPUs Ray reserves per actor.", min=0)] = 1.0,
    precision: Annotated[str, typer.Option(help="auto, fp32, int8 or int8-only.")] = "auto",
    ray_address: RayAddressOpt = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    home: HomeOpt = None,
) -> None:
    """Predict every row of files with a bundle; bad rows go to rejects.jsonl with their file and row number."""
    # lazy: pyarrow and (for --backend ray) Ray load only for this command
    from aiforge.scale.batch import batch as run_batch

    if backend not in ("local", "ray"):
        raise AiforgeError(f"--backend {backend!r}: expected local or ray.")
    result = run_batch(bundle, input=input, output=output, backend="ray" if backend == "ray" else "local",
                       column=column, id_column=id_column, actors=actors, batch_size=batch_size,
                       cpus_per_actor=cpus_per_actor, precision=precision, ray_address=ray_address,
                       home=home, progress=progress)
    out.print(f"{result.rows} rows: {result.predictions} predictions -> {result.predictions_file}, "
              f"{result.rejects} rejects -> {result.rejects_file} ({result.rows_per_s:.0f} rows/s)", highlight=False)


def deploy(
    bundle: Annotated[str, typer.Argument(help="Bundle folder, NAME or NAME:VERSION.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="New folder for the manifest, Dockerfile and "
                                         "build context.")],
    target: Annotated[str, typer.Option(help="Where to deploy: kuberay (a RayService).")] = "kuberay",
    image: Annotated[str | None, typer.Option(help="Image tag the manifest uses [default: aiforge-NAME:VERSION].")
                     ] = None,
    replicas: Annotated[int | None, typer.Option(help="Serve replicas [default: 1].")] = None,
    autoscale: Annotated[str | None, typer.Option(help="MIN:MAX replicas, autoscaled.")] = None,
    workers: Annotated[int, typer.Option(help="Ray worker pods.", min=1)] = 2,
    ray_ingress: Annotated[str | None, typer.Option(help="haproxy (Ray's high-throughput mode) or proxy (Ray's "
                                                       "Python HTTP proxy) [default: haproxy].")] = None,
    home: HomeOpt = None,
) -> None:
    """Write deployment files for a bundle: a KubeRay RayService manifest and a Dockerfile (pinned, non-root)."""
    # lazy: yaml and the scale options load only for this command
    from aiforge.scale.kuberay import deploy_kuberay
    from aiforge.scale.options import parse_autoscale, scale_options

    if target != "kuberay":
        raise AiforgeError(f"--target {target!r}: the deploy targets are: kuberay.")
    files = deploy_kuberay(bundle, output=output, image=image, workers=workers, home=home,
                           options=scale_options(replicas=replicas, autoscale=parse_autoscale(autoscale),
                                                 ray_ingress=ray_ingress))
    out.print(json.dumps({"manifest": str(files.manifest), "dockerfile": str(files.dockerfile),
                          "image": files.image}), highlight=False)
    out.print(f"build: docker build -t {files.image} {files.context}; apply: kubectl apply -f {files.manifest}",
              highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``batch`` and ``deploy`` to the aiforge CLI."""
    app.command()(batch)
    app.command()(deploy)

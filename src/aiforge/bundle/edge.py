"""Edge packages: a bundle plus a runner that needs only onnxruntime, numpy and tokenizers (Pillow for images).

``build_edge`` writes a self-contained folder and a ``.zip`` of it::

    DIR/run.py            the runner (aiforge/bundle/edge_run.py): CLI and --serve (http.server)
    DIR/requirements.txt  its dependencies, pinned to the versions this aiforge was tested with
    DIR/edge.json         what the runner loads: the graph, the int8 guard, the files it needs
    DIR/bundle/           the bundle's files, minus the graphs the default precision does not use
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from aiforge.bundle.format import MANIFEST, read_manifest
from aiforge.bundle.registry import Registry
from aiforge.errors import ExportError
from aiforge.version import __version__

__all__ = ["EDGE_TASKS", "EdgePackage", "build_edge"]


EDGE_TASKS = {"text-classification": ["onnxruntime", "numpy", "tokenizers"],
              "image-classification": ["onnxruntime", "numpy", "pillow"]}
"""The tasks an edge package runs, and the distributions its runner imports for each."""


RUNNER = Path(__file__).with_name("edge_run.py")


@dataclass(frozen=True)
class EdgePackage:
    """What :func:`build_edge` wrote."""

    folder: Path
    zip: Path
    task: str
    graph: str
    files: list[str]  # bundle files copied (relative to DIR/bundle)
    folder_bytes: int
    zip_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "zip": str(self.zip), "task": self.task, "graph": self.graph,
                "files": self.files, "folder_bytes": self.folder_bytes, "zip_bytes": self.zip_bytes}


def _requirements(task: str) -> str:
    lines = []
    for dist in EDGE_TASKS[task]:
        try:
            lines.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError as exc:
            raise ExportError(f"{dist} is not installed, so its version cannot be pinned; "
                              f"pip install {dist}") from exc
    return "\n".join(lines) + "\n"


def build_edge(bundle: str | Path, *, out: Path, home: str | Path | None = None,
               version: int | str | None = None) -> EdgePackage:
    """Write the edge package of ``bundle`` (a folder, ``NAME`` or ``NAME:VERSION``) to ``out`` and ``out.zip``.

    Raises:
        RegistryError: unknown bundle.
        BundleError, ChecksumError: the bundle fails its checks.
        ExportError: the bundle's task has no edge runner, or ``out`` exists and is not empty.
    """
    path = Registry(home).resolve(bundle, version)
    manifest = read_manifest(path)  # verifies every file before anything is copied
    if manifest.task not in EDGE_TASKS:
        raise ExportError(f"{manifest.name}: edge packages run {sorted(EDGE_TASKS)} bundles, not "
                          f"{manifest.task!r}; serve it with `aiforge serve` instead.")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out}: exists and is not an empty folder; choose another -o DIR or remove it.")
    pipeline: dict[str, Any] = json.loads((path / "pipeline.json").read_text(encoding="utf-8"))
    graphs: dict[str, str] = pipeline["graphs"]
    precision = pipeline.get("default_precision", "fp32")
    edge: dict[str, Any] = {"name": manifest.name, "version": manifest.version, "task": manifest.task,
                            "precision": precision, "graph": graphs[precision], "aiforge_version": __version__}
    guard = pipeline.get("int8_fallback") if precision == "int8" else None
    if guard:  # the image int8 guard re-runs low-margin items in fp32, as the server does
        edge["fallback"] = {"graph": graphs[guard["graph"]], "min_margin": float(guard["min_margin"])}
    used = {edge["graph"], *([edge["fallback"]["graph"]] if guard else [])}
    files = sorted(rel for rel in manifest.files if rel not in set(graphs.values()) - used)
    edge["files"] = files
    target = out / "bundle"
    try:
        target.mkdir(parents=True, exist_ok=True)
        for rel in [*files, MANIFEST]:
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path / rel, target / rel)
        shutil.copyfile(RUNNER, out / "run.py")
        (out / "requirements.txt").write_text(_requirements(manifest.task), encoding="utf-8")
        (out / "edge.json").write_text(json.dumps(edge, indent=2), encoding="utf-8")
        archive = Path(shutil.make_archive(str(out), "zip", root_dir=out.parent, base_dir=out.name))
    except OSError as exc:
        raise ExportError(f"{out}: cannot write the edge package ({exc}).") from exc
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return EdgePackage(folder=out, zip=archive, task=manifest.task, graph=edge["graph"], files=files,
                       folder_bytes=size, zip_bytes=archive.stat().st_size)

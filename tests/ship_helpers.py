"""Helpers for the ``aiforge ship`` tests: a session bundle registered again with gates in its stored spec.

Session fixtures must not be modified (ship promotes them), and training a bundle per gate setting
would cost minutes, so each test copies the fixture's files into a fresh registry; only the
manifest's stored spec gains the ``gates:`` block (the graphs and every checksummed file are the same).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from aiforge.bundle.format import MANIFEST, read_manifest
from aiforge.bundle.registry import Registry

__all__ = ["register_with_gates"]


def register_with_gates(bundle: Path, home: Path, gates: dict[str, Any], *,
                        data: dict[str, Any] | None = None) -> Path:
    """Register a copy of ``bundle`` in the registry at ``home`` with ``gates`` as its spec's gates; its folder.

    ``data`` updates the stored spec's data block (group columns a test gates on, say).
    """
    manifest = read_manifest(bundle)
    registry = Registry(home)
    staged = registry.staging_dir()
    for rel in manifest.files:
        target = staged / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(bundle / rel, target)
    assert not (staged / MANIFEST).exists()
    extra = dict(manifest.extra)
    extra["spec"] = {**extra["spec"], "gates": gates}
    if data is not None:
        extra["spec"]["data"] = {**extra["spec"]["data"], **data}
    record = registry.add(staged, name=manifest.name, task=manifest.task, extra=extra,
                             metrics=dict(extra.get("metrics", {})))
    return record.path

"""The bundle folder: ``manifest.json`` lists every file with its sha256 and size.

Loading verifies every checksum and refuses unknown format versions. Nothing in a bundle
is ever unpickled: graphs are ONNX, everything else is JSON, Markdown or tokenizer JSON.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiforge.errors import BundleError, ChecksumError

__all__ = ["FORMAT_VERSION", "MANIFEST", "BundleManifest", "read_manifest", "sha256_file", "write_manifest"]

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class BundleManifest:
    """The parsed ``manifest.json``."""

    format_version: int
    task: str
    name: str
    version: str
    created: str
    files: dict[str, dict[str, Any]]
    extra: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, ``extra`` keys at top level."""
        base = {"format_version": self.format_version, "task": self.task, "name": self.name,
                "version": self.version, "created": self.created, "files": self.files}
        return {**base, **self.extra}


def write_manifest(directory: Path, *, task: str, name: str, version: str,
                   extra: dict[str, Any] | None = None) -> BundleManifest:
    """Checksum every file under ``directory`` and write ``manifest.json`` beside them."""
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST):
        rel = path.relative_to(directory).as_posix()
        files[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    manifest = BundleManifest(
        format_version=FORMAT_VERSION, task=task, name=name, version=version,
        created=datetime.now(UTC).isoformat(timespec="seconds"), files=files, extra=dict(extra or {}),
    )
    (directory / MANIFEST).write_text(json.dumps(manifest.to_dict(), indent=2), encoding="utf-8")
    return manifest


def read_manifest(directory: Path, *, verify: bool = True) -> BundleManifest:
    """Read ``manifest.json`` and (by default) check every file against it.

    Raises:
        BundleError: no manifest, unreadable manifest, unknown format version, missing file.
        ChecksumError: a file's size or sha256 differs from the manifest (names the file).
    """
    path = directory / MANIFEST
    if not path.is_file():
        raise BundleError(f"{directory}: not a bundle (no {MANIFEST}).")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        version = raw.pop("format_version")
        known = {k: raw.pop(k) for k in ("task", "name", "version", "created", "files")}
    except (json.JSONDecodeError, KeyError, AttributeError) as exc:
        raise BundleError(f"{path}: manifest is unreadable or incomplete ({exc}).") from exc
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{path}: bundle format version {version!r} is not supported (this aiforge reads {FORMAT_VERSION}). "
            "Re-export the bundle with this aiforge version."
        )
    files = known["files"]
    if not isinstance(files, dict) or not all(
        isinstance(i, dict) and isinstance(i.get("sha256"), str) and isinstance(i.get("size"), int)
        for i in files.values()
    ):
        raise BundleError(f"{path}: manifest 'files' must map each path to its sha256 and size; it is malformed.")
    manifest = BundleManifest(format_version=version, extra=raw, **known)
    if verify:
        for rel, info in manifest.files.items():
            file = (directory / rel).resolve()
            if directory.resolve() not in file.parents:
                raise BundleError(f"{path}: file entry {rel!r} points outside the bundle.")
            if not file.is_file():
                raise BundleError(f"{directory}: file {rel!r} listed in the manifest is missing.")
            if file.stat().st_size != info["size"] or sha256_file(file) != info["sha256"]:
                raise ChecksumError(
                    f"{directory}: file {rel!r} does not match its sha256 in the manifest; the bundle "
                    "is corrupt or was modified. Re-export it or restore the file."
                )
    return manifest

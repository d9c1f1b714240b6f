"""The Registry: a SQLite index at ``$AIFORGE_HOME/registry.db`` and bundle folders beside it.

Adding a bundle is atomic: files are written to a staging folder on the same file system,
fsynced, renamed into ``bundles/NAME/VERSION`` and only then indexed, in one transaction.

A writer killed mid-export (``kill -9``) leaves its ``.staging/<uuid>`` folder behind. Each staging
folder has an owner record beside it (``<uuid>.owner``: pid, process start time, host), and every
registry write first removes the folders whose writer is gone; a live export's folder is never
touched. Nothing is ever loaded from ``.staging``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiforge.bundle.format import MANIFEST, BundleCheck, BundleManifest, read_manifest, verify_bundle, write_manifest
from aiforge.errors import RegistryError

__all__ = ["STAGING", "BundleRecord", "RegisteredBundle", "Registry", "default_home", "verify"]

STAGING = ".staging"
# A staging folder with no readable owner record (made before owners were recorded, or whose record is
# half-written) is removed only once it is this old: long past any export, short enough to reclaim the disk.
STALE_UNOWNED_S = 24 * 3600

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bundles (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    task TEXT NOT NULL,
    path TEXT NOT NULL,
    created TEXT NOT NULL,
    stage TEXT NOT NULL DEFAULT 'none',
    metrics TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (name, version)
)
"""


def default_home() -> Path:
    """``$AIFORGE_HOME`` or ``~/.aiforge``."""
    return Path(os.environ.get("AIFORGE_HOME") or Path.home() / ".aiforge").expanduser()


@dataclass(frozen=True)
class BundleRecord:
    """One registered bundle version."""

    name: str
    version: int
    task: str
    path: Path
    created: str
    stage: str
    metrics: dict[str, Any]


@dataclass(frozen=True)
class RegisteredBundle:
    """What :meth:`Registry.add` made: the index row and the manifest it wrote."""

    record: BundleRecord
    manifest: BundleManifest

    @property
    def path(self) -> Path:
        return self.record.path


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started (Linux ``/proc``), so a reused pid is not taken for the writer; None elsewhere."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _old(path: Path) -> bool:
    try:
        return time.time() - path.lstat().st_mtime > STALE_UNOWNED_S
    except FileNotFoundError:  # removed meanwhile (by its writer, or another cleaner)
        return False


def _owner_gone(owner: Path, folder: Path) -> bool:
    """True when the process that made ``folder`` has exited (or, with no owner record, the folder is old)."""
    try:
        record = json.loads(owner.read_text(encoding="utf-8"))
        pid, host, started = int(record["pid"]), str(record["host"]), record.get("started")
    except (OSError, ValueError, KeyError, TypeError):
        return _old(folder)
    if host != socket.gethostname():  # another machine's export on a shared home: its pids mean nothing here
        return _old(folder)
    if pid == os.getpid():
        return False
    return not _alive(pid) or (started is not None and _process_start(pid) not in (None, started))


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with path.open("rb") as fh:
                os.fsync(fh.fileno())
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Registry:
    """Named, versioned bundles under one home folder."""

    def __init__(self, home: str | Path | None = None) -> None:
        self.home = Path(home) if home is not None else default_home()
        self.db_path = self.home / "registry.db"

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        self.home.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(_SCHEMA)
            yield conn
        finally:
            conn.close()

    def staging_dir(self) -> Path:
        """A fresh folder on the registry's file system to build a bundle in (stale ones are cleaned first).

        Its owner record (``<uuid>.owner`` beside it, written before the folder) marks it as this process's.
        """
        self.clean_staging()
        root = self.home / STAGING
        root.mkdir(parents=True, exist_ok=True)
        name = uuid.uuid4().hex
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": _process_start(os.getpid()),
                 "created": time.time()}
        (root / f"{name}.owner").write_text(json.dumps(owner), encoding="utf-8")
        path = root / name
        path.mkdir()
        return path

    def clean_staging(self) -> list[Path]:
        """Remove staging folders whose writer process is gone; the folders removed.

        A folder whose owner record names a live process (or another host) is left alone; one without a
        readable record only once it is older than ``STALE_UNOWNED_S``.
        """
        root = self.home / STAGING
        if not root.is_dir():
            return []
        removed = []
        for entry in sorted(root.iterdir()):
            if entry.suffix == ".owner":
                if entry.exists() and not (root / entry.stem).exists() and _owner_gone(entry, entry):
                    entry.unlink(missing_ok=True)  # a writer killed between its record and its folder
                continue
            owner = root / f"{entry.name}.owner"
            if _owner_gone(owner, entry):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                owner.unlink(missing_ok=True)
                removed.append(entry)
        return removed

    @staticmethod
    def _release(staged: Path) -> None:
        """Drop the owner record of a staging folder that was moved or removed."""
        (staged.parent / f"{staged.name}.owner").unlink(missing_ok=True)

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh staging folder (as ``staging_dir``) that is removed if the block raises.

        Build a bundle inside the block, then hand the folder to :meth:`add`.
        """
        path = self.staging_dir()
        try:
            yield path
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            self._release(path)
            raise

    def add(self, staged: Path, *, name: str, task: str, extra: dict[str, Any] | None = None,
            metrics: dict[str, Any] | None = None) -> RegisteredBundle:
        """Give ``staged`` the next version of ``name``, write its manifest and index it.

        The staging folder is moved, not copied; on failure it is removed. Stale staging folders of
        writers that died are removed first.
        """
        self.clean_staging()
        with self._db() as conn:
            try:
                conn.execute("BEGIN IMMEDIATE")
                row = conn.execute("SELECT MAX(version) FROM bundles WHERE name = ?", (name,)).fetchone()
                version = int(row[0] or 0) + 1
                manifest = write_manifest(staged, task=task, name=name, version=str(version), extra=extra)
                _fsync_tree(staged)
                final = self.home / "bundles" / name / str(version)
                final.parent.mkdir(parents=True, exist_ok=True)
                if final.exists():  # a leftover from a crash between rename and insert
                    shutil.rmtree(final)
                os.replace(staged, final)
                conn.execute(
                    "INSERT INTO bundles (name, version, task, path, created, metrics) VALUES (?, ?, ?, ?, ?, ?)",
                    (name, version, task, str(final), manifest.created, json.dumps(metrics or {})),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK") if conn.in_transaction else None
                shutil.rmtree(staged, ignore_errors=True)
                raise
            finally:
                self._release(staged)
        return RegisteredBundle(self.get(name, version), manifest)

    def records(self) -> list[BundleRecord]:
        """Every registered version, by name then version."""
        with self._db() as conn:
            rows = conn.execute("SELECT * FROM bundles ORDER BY name, version").fetchall()
        return [self._record(r) for r in rows]

    def versions(self, name: str) -> list[BundleRecord]:
        """Every version of ``name``, oldest first.

        Raises:
            RegistryError: no bundle of that name.
        """
        records = [r for r in self.records() if r.name == name]
        if not records:
            known = sorted({r.name for r in self.records()})
            raise RegistryError(
                f"no bundle named {name!r} in the registry at {self.home}. "
                f"Registered: {', '.join(known) or 'none'}. Train one with: aiforge train aiforge.yaml"
            )
        return records

    def get(self, name: str, version: int | str | None = None) -> BundleRecord:
        """One version of ``name`` (the latest if ``version`` is None).

        Raises:
            RegistryError: unknown name or version.
        """
        records = self.versions(name)
        if version is None or version == "latest":
            return records[-1]
        for r in records:
            if str(r.version) == str(version):
                return r
        raise RegistryError(
            f"bundle {name!r} has no version {version!r}; versions are {[r.version for r in records]}."
        )

    def resolve(self, name_or_path: str | Path, version: int | str | None = None) -> Path:
        """The folder of a bundle given by path, ``NAME`` or ``NAME:VERSION``.

        Raises:
            RegistryError: neither an existing bundle folder nor a registered name, or a folder in a
                registry's ``.staging`` area (an unfinished export).
        """
        text = str(name_or_path)
        candidate = Path(name_or_path)
        looks_like_path = isinstance(name_or_path, Path) or "/" in text or text.startswith(".")
        if candidate.is_dir() and (looks_like_path or (candidate / MANIFEST).is_file()):
            if STAGING in candidate.resolve().parts:
                raise RegistryError(f"{text}: is inside a registry's {STAGING} folder, an export that never "
                                    "finished; it is never loaded. Export the bundle again, or load a "
                                    "registered version (NAME or NAME:VERSION).")
            return candidate
        if looks_like_path:
            raise RegistryError(f"{text}: no such bundle folder.")
        if version is None and ":" in text:
            text, version = text.rsplit(":", 1)
        return self.get(text, version).path

    def manifest(self, name: str, version: int | str | None = None) -> BundleManifest:
        """The manifest of a registered bundle, checksums verified."""
        return read_manifest(self.get(name, version).path)

    def ship_record(self, name: str, version: int | str) -> Path:
        """Where ``aiforge ship`` keeps its last report on one version (the model page shows it)."""
        return self.home / "ships" / name / f"{int(version)}.json"

    @staticmethod
    def _record(row: tuple[Any, ...]) -> BundleRecord:
        name, version, task, path, created, stage, metrics = row
        return BundleRecord(name, int(version), task, Path(path), created, stage, json.loads(metrics))

    def set_stage(self, name: str, version: int | str, stage: str) -> BundleRecord:
        """Mark one version's stage; promoting to ``production`` archives the previous production version.

        The ``stage`` column has been in the schema since the first registry.db, so no migration is needed.

        Raises:
            RegistryError: unknown name, version or stage.
        """
        if stage not in STAGES:
            raise RegistryError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}.")
        record = self.get(name, version)
        with self._db() as conn:
            conn.execute("BEGIN IMMEDIATE")
            if stage == "production":
                conn.execute("UPDATE bundles SET stage = 'archived' WHERE name = ? AND stage = 'production' "
                             "AND version != ?", (name, record.version))
            conn.execute("UPDATE bundles SET stage = ? WHERE name = ? AND version = ?", (stage, name, record.version))
            conn.execute("COMMIT")
        return self.get(name, record.version)


def verify(bundle: str | Path, *, version: int | str | None = None, home: str | Path | None = None) -> BundleCheck:
    """Check a bundle (folder, ``NAME`` or ``NAME:VERSION``) as loading does: what ``aiforge verify`` prints.

    Raises:
        RegistryError: unknown name or version, or a folder in ``.staging``.
        BundleError: the bundle is tampered with or corrupt; the message names the file.
    """
    return verify_bundle(Registry(home).resolve(bundle, version))


# Registry stages (the ``stage`` column); ``aiforge ship`` promotes to production.
STAGES = ("none", "staging", "production", "archived")

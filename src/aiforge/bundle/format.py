"""The bundle folder: ``manifest.json`` lists every file with its sha256 and size, and protects itself.

A bundle is accepted only when

- the manifest's ``digest`` (sha256 over its own canonical JSON, every key but ``digest`` and ``signature``)
  matches, so an edited checksum, metric or ``spec.serve`` field is caught;
- with ``AIFORGE_SIGNING_KEY`` set, its ``signature`` (HMAC-SHA256 of the same canonical JSON under that key)
  matches: the digest alone stops accidents and naive edits, only the key stops someone who recomputes it;
- every file in the folder is a regular file listed with a matching size and sha256, and nothing unlisted
  is there;
- every file ``pipeline.json`` names is inside the bundle and listed.

Bundles of format 1 (written before the digest) are refused with a "re-export" message rather than
accepted with a warning: accepting them would let anyone strip the digest and call the bundle format 1.
Nothing in a bundle is ever unpickled: graphs are ONNX, everything else is JSON, Markdown or tokenizer JSON.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import mmap
import os
import re
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from aiforge.errors import BundleError, ChecksumError

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST",
    "PIPELINE",
    "PIPELINE_FILE_KEYS",
    "SIGNING_KEY_ENV",
    "BundleCheck",
    "BundleFiles",
    "BundleManifest",
    "manifest_digest",
    "manifest_signature",
    "read_manifest",
    "sha256_file",
    "verify_bundle",
    "write_manifest",
]

FORMAT_VERSION = 2  # 2: the manifest carries a digest of itself (and optionally a signature)
MANIFEST = "manifest.json"
PIPELINE = "pipeline.json"
SIGNING_KEY_ENV = "AIFORGE_SIGNING_KEY"
# pipeline.json's top-level keys that name bundle files (a string, or a mapping/list of strings), for every
# kind; anywhere in the pipeline, a string ending in one of GRAPH_SUFFIXES names a file too.
PIPELINE_FILE_KEYS = ("graph", "graphs", "tokenizer", "encoder", "items", "users", "faiss")
GRAPH_SUFFIXES = (".onnx", ".npy", ".faiss")
_SELF_KEYS = ("digest", "signature")  # what the digest and the signature do not cover
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_SIGNATURE = re.compile(r"hmac-sha256:[0-9a-f]{64}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
T = TypeVar("T")


def sha256_file(path: Path, *, block: int = 8 << 20) -> str:
    """Hex sha256 of a file, read in ``block``-byte pieces into one buffer.

    Large pieces: a thread hashing takes the GIL back after every piece, so small ones stall (and are
    stalled by) a thread running Python beside it, e.g. the imports the server's start-up overlaps with
    loading (``serve/preload.py``). The buffer is an anonymous map, returned to the system when the
    file is hashed (a freed heap buffer of this size stays resident); not a map of the file itself,
    whose pages would count as resident memory: the fp32 graph a server does not load would have
    raised its peak by its size.
    """
    h = hashlib.sha256()
    with mmap.mmap(-1, block) as buffer, path.open("rb") as fh:
        view = memoryview(buffer)
        try:
            while n := fh.readinto(view):
                h.update(view[:n])
        finally:
            view.release()
    return h.hexdigest()


def _canonical(raw: Mapping[str, Any]) -> bytes:
    """The bytes the digest and the signature cover: sorted keys, no spaces, ASCII only."""
    content = {k: v for k, v in raw.items() if k not in _SELF_KEYS}
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def manifest_digest(raw: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` over the canonical JSON of a manifest mapping (its ``digest``/``signature`` left out)."""
    return "sha256:" + hashlib.sha256(_canonical(raw)).hexdigest()


def manifest_signature(raw: Mapping[str, Any], *, key: str) -> str:
    """``hmac-sha256:<hex>`` of the canonical JSON of a manifest mapping under ``key``."""
    return "hmac-sha256:" + hmac.new(key.encode("utf-8"), _canonical(raw), hashlib.sha256).hexdigest()


def _signing_key(given: str | None) -> str | None:
    return given if given is not None else (os.environ.get(SIGNING_KEY_ENV) or None)


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
    digest: str = ""
    signature: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, ``extra`` keys at top level, ``digest`` (and ``signature``) last."""
        base = {"format_version": self.format_version, "task": self.task, "name": self.name,
                "version": self.version, "created": self.created, "files": self.files}
        own = {"digest": self.digest} | ({"signature": self.signature} if self.signature else {})
        return {**base, **self.extra, **own}


@dataclass(frozen=True)
class BundleCheck:
    """What :func:`verify_bundle` found: every file checked, and how the manifest vouched for itself."""

    path: Path
    manifest: BundleManifest
    files: int
    bytes: int
    digest: str
    signature: str  # "verified", "present, not checked" (no key set) or "none"
    details: Mapping[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """One line for people: ``OK NAME:VERSION (TASK): N files, X MB; digest …; signature: …``."""
        m = self.manifest
        return (f"OK {m.name}:{m.version} ({m.task}) at {self.path}: {self.files} files, "
                f"{self.bytes / 1e6:.1f} MB checked; digest {self.digest}; signature: {self.signature}")


def _walk(directory: Path) -> Iterator[tuple[str, os.stat_result]]:
    """Every entry under ``directory`` but the manifest and folders: (relative path, lstat), links not followed."""
    for root, dirs, names in os.walk(directory, followlinks=False):
        for name in sorted(dirs + names):
            full = Path(root) / name
            st = full.lstat()
            rel = full.relative_to(directory).as_posix()
            if stat.S_ISDIR(st.st_mode) or rel == MANIFEST:
                continue
            yield rel, st


def write_manifest(directory: Path, *, task: str, name: str, version: str,
                   extra: dict[str, Any] | None = None, signing_key: str | None = None) -> BundleManifest:
    """Checksum every file under ``directory`` and write ``manifest.json`` beside them, with its digest.

    The manifest is signed when ``signing_key`` is given or ``AIFORGE_SIGNING_KEY`` is set.

    Raises:
        BundleError: the folder holds a link or anything else that is not a regular file.
    """
    files = {}
    for rel, st in _walk(directory):
        if not stat.S_ISREG(st.st_mode):
            raise BundleError(f"{directory}: {rel!r} is not a regular file; a bundle holds regular files only.")
        files[rel] = {"sha256": sha256_file(directory / rel), "size": st.st_size}
    body = {k: v for k, v in (extra or {}).items() if k not in _SELF_KEYS}
    manifest = BundleManifest(
        format_version=FORMAT_VERSION, task=task, name=name, version=version,
        created=datetime.now(UTC).isoformat(timespec="seconds"), files=files, extra=body,
    )
    raw = manifest.to_dict()
    key = _signing_key(signing_key)
    signed = replace(manifest, digest=manifest_digest(raw),
                     signature=manifest_signature(raw, key=key) if key else None)
    (directory / MANIFEST).write_text(json.dumps(signed.to_dict(), indent=2), encoding="utf-8")
    return signed


def _problem(directory: Path, rel: str, what: str) -> str:
    return f"{directory}: {rel!r} {what}"


def _parse(directory: Path, path: Path) -> dict[str, Any]:
    if path.is_symlink() or not path.is_file():
        raise BundleError(_problem(directory, MANIFEST, "is missing or not a regular file: not a bundle."))
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(_problem(directory, MANIFEST, f"is unreadable ({exc}). Re-export the bundle.")) from exc
    if not isinstance(raw, dict):
        raise BundleError(_problem(directory, MANIFEST, "is unreadable: not a JSON object. Re-export the bundle."))
    return raw


def _check_self(directory: Path, raw: dict[str, Any], key: str | None) -> None:
    """The format version, then the digest, then (with a key) the signature."""
    version = raw.get("format_version")
    if version == 1:
        raise BundleError(_problem(directory, MANIFEST, "is of bundle format 1, written before manifests carried "
                                   "a digest, so nothing vouches for it. Re-export the bundle with this aiforge "
                                   "(aiforge train SPEC)."))
    if version != FORMAT_VERSION:
        raise BundleError(_problem(directory, MANIFEST, f"has bundle format version {version!r}, which is not "
                                   f"supported (this aiforge reads {FORMAT_VERSION}). Re-export the bundle with "
                                   "this aiforge version."))
    digest = raw.get("digest")
    if digest is None:
        raise BundleError(_problem(directory, MANIFEST, "has no digest; it was edited or written by a tool other "
                                   "than aiforge. Re-export the bundle."))
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise ChecksumError(_problem(directory, MANIFEST, f"has a malformed digest {digest!r} (expected "
                                     "'sha256:' and 64 hex digits). Re-export the bundle."))
    actual = manifest_digest(raw)
    if not hmac.compare_digest(digest, actual):
        raise ChecksumError(_problem(directory, MANIFEST, f"does not match its own digest (recorded {digest}, "
                                     f"content hashes to {actual}): the manifest was edited after export. "
                                     "Re-export the bundle or restore manifest.json."))
    if key is None:
        return
    signature = raw.get("signature")
    if signature is None:
        raise ChecksumError(_problem(directory, MANIFEST, f"is not signed, and {SIGNING_KEY_ENV} is set, so only "
                                     f"signed bundles are accepted. Re-export it with {SIGNING_KEY_ENV} set."))
    expected = manifest_signature(raw, key=key)
    if not isinstance(signature, str) or not _SIGNATURE.fullmatch(signature) or not hmac.compare_digest(
            signature, expected):
        raise ChecksumError(_problem(directory, MANIFEST, f"has a signature that does not verify with "
                                     f"{SIGNING_KEY_ENV}: it was edited after signing, or signed with another "
                                     "key. Re-export the bundle with the right key."))


def _check_entries(directory: Path, files: object) -> dict[str, dict[str, Any]]:
    """``files`` maps plain relative paths to a 64-hex sha256 and a size."""
    if not isinstance(files, dict):
        raise BundleError(_problem(directory, MANIFEST, "is malformed: 'files' must map each path to its sha256 "
                                   "and size. Re-export the bundle."))
    for rel, info in files.items():
        pure = PurePosixPath(rel)
        if pure.is_absolute() or ".." in pure.parts:
            raise BundleError(_problem(directory, rel, f"is listed in {MANIFEST} but points outside the bundle."))
        if not rel or rel == MANIFEST or pure.as_posix() != rel or "\\" in rel:
            raise BundleError(_problem(directory, rel, f"in {MANIFEST} is not a plain relative path inside the "
                                       "bundle. Re-export the bundle."))
        if not (isinstance(info, dict) and isinstance(info.get("sha256"), str) and _SHA256.fullmatch(info["sha256"])
                and type(info.get("size")) is int and info["size"] >= 0):
            raise BundleError(_problem(directory, rel, f"has a malformed entry in {MANIFEST} (expected a 64-hex "
                                       f"sha256 and a size in bytes, got {info!r}). Re-export the bundle."))
    return files


def _check_listing(directory: Path, files: dict[str, dict[str, Any]]) -> None:
    """Every entry on disk is a listed regular file, and every listed file is a regular file (no bytes read)."""
    unlisted = []
    for rel, st in _walk(directory):
        if stat.S_ISLNK(st.st_mode):
            raise BundleError(_problem(directory, rel, "is a symbolic link; a bundle holds regular files only. "
                                       "Re-export the bundle or restore the file."))
        if not stat.S_ISREG(st.st_mode):
            raise BundleError(_problem(directory, rel, "is not a regular file; a bundle holds regular files only. "
                                       "Remove it."))
        if rel not in files:
            unlisted.append(rel)
    if unlisted:
        names = ", ".join(repr(u) for u in unlisted)
        raise BundleError(f"{directory}: {names} {'is' if len(unlisted) == 1 else 'are'} in the bundle folder but "
                          f"not listed in {MANIFEST}: added after export, or the manifest was edited. Remove "
                          f"{'it' if len(unlisted) == 1 else 'them'} or re-export the bundle.")
    for rel in files:
        try:
            mode = (directory / rel).lstat().st_mode
        except FileNotFoundError:
            raise BundleError(_problem(directory, rel, f"is listed in {MANIFEST} but missing. Restore it or "
                                       "re-export the bundle.")) from None
        if not stat.S_ISREG(mode):  # a folder where a file should be (links and the like were refused above)
            raise BundleError(_problem(directory, rel, f"is listed in {MANIFEST} as a file but is not a regular "
                                       "file. Restore it or re-export the bundle."))


def _check_content(directory: Path, rel: str, info: Mapping[str, Any], size: int, digest: str) -> None:
    if size != info["size"] or digest != info["sha256"]:
        raise ChecksumError(f"{directory}: file {rel!r} does not match its sha256 in {MANIFEST} (expected "
                            f"{info['sha256'][:12]}… and {info['size']} bytes, got {digest[:12]}… and {size} "
                            "bytes): the bundle is corrupt or was modified. Re-export it or restore the file.")


def _pipeline_refs(pipeline: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, named file) for every file ``pipeline.json`` names."""
    for key in PIPELINE_FILE_KEYS:
        value = pipeline.get(key)
        if isinstance(value, str):
            yield key, value
        elif isinstance(value, Mapping):
            yield from ((f"{key}.{k}", v) for k, v in value.items() if isinstance(v, str))
        elif isinstance(value, list):
            yield from ((f"{key}[{i}]", v) for i, v in enumerate(value) if isinstance(v, str))

    def walk(node: Any, where: str) -> Iterator[tuple[str, str]]:
        if isinstance(node, str) and node.lower().endswith(GRAPH_SUFFIXES):
            yield where, node
        elif isinstance(node, Mapping):
            for k, v in node.items():
                yield from walk(v, f"{where}.{k}" if where else str(k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from walk(v, f"{where}[{i}]")

    yield from walk(pipeline, "")


def _parse_pipeline(directory: Path, data: bytes) -> dict[str, Any]:
    try:
        pipeline = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(_problem(directory, PIPELINE, f"is unreadable ({exc}).")) from exc
    if not isinstance(pipeline, dict):
        raise BundleError(_problem(directory, PIPELINE, "is not a JSON object."))
    return pipeline


def _check_pipeline(directory: Path, pipeline: Mapping[str, Any], files: dict[str, dict[str, Any]]) -> None:
    """Every file ``pipeline`` names is inside the bundle and listed."""
    for where, named in _pipeline_refs(pipeline):
        pure = PurePosixPath(named)
        if pure.is_absolute() or ".." in pure.parts or "\\" in named:
            raise BundleError(_problem(directory, PIPELINE, f"names {named!r} at {where!r}, which is outside the "
                                       "bundle; a bundle may only use its own files. Re-export the bundle."))
        if pure.as_posix() not in files:
            raise BundleError(_problem(directory, PIPELINE, f"names {named!r} at {where!r}, which is not listed "
                                       f"in {MANIFEST}. Re-export the bundle."))


def _manifest_from(raw: dict[str, Any], path: Path) -> BundleManifest:
    try:
        known = {k: raw.pop(k) for k in ("format_version", "task", "name", "version", "created", "files")}
    except KeyError as exc:
        raise BundleError(_problem(path.parent, MANIFEST, f"is unreadable or incomplete: it lacks {exc}. "
                                   "Re-export the bundle.")) from exc
    own = {k: raw.pop(k, None) for k in _SELF_KEYS}
    return BundleManifest(**known, extra=raw, digest=own["digest"] or "", signature=own["signature"])


def _identity(file: Path) -> tuple[int, int, int, int, int]:
    """What changes when a file's content is written or another file takes its name: device, inode,
    size, modification and change time (the change time cannot be set back by a user)."""
    st = file.stat()
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


class BundleFiles:
    """A bundle folder opened for loading: checked as :func:`read_manifest` checks it, each file hashed once.

    Opening checks the manifest (digest, signature), the listing (no unlisted, linked, missing or
    irregular file) and ``pipeline.json`` (hashed, and naming only listed files); no other file is read.
    A runtime then loads each file it serves with :meth:`load` (hashed just before, and refused if it
    changed while it was loaded, so the bytes served are the bytes hashed) or reads it with
    :meth:`read_bytes` (which hashes the very bytes it returns); :meth:`verify_rest` hashes every file
    not loaded that way. Every file is hashed exactly once, none twice.
    """

    def __init__(self, directory: Path, *, signing_key: str | None = None) -> None:
        self.path = directory
        raw = _parse(directory, directory / MANIFEST)
        _check_self(directory, raw, _signing_key(signing_key))
        self.manifest = _manifest_from(raw, directory / MANIFEST)
        self._unread = dict(_check_entries(directory, self.manifest.files))  # listed, not yet hashed
        _check_listing(directory, self._unread)
        if PIPELINE not in self._unread:
            raise BundleError(_problem(directory, PIPELINE, f"is not listed in {MANIFEST}; every bundle has one. "
                                       "Re-export the bundle."))
        self.pipeline = _parse_pipeline(directory, self.read_bytes(PIPELINE))
        _check_pipeline(directory, self.pipeline, self.manifest.files)

    def _take(self, rel: str) -> Mapping[str, Any]:
        info = self._unread.pop(rel, None)
        if info is None:
            state = "was already read" if rel in self.manifest.files else f"is not listed in {MANIFEST}"
            raise BundleError(_problem(self.path, rel, f"{state}: a runtime reads each bundle file once."))
        return info

    def read_bytes(self, rel: str) -> bytes:
        """The content of listed file ``rel``, checked against its size and sha256 (each file once).

        Raises:
            BundleError: ``rel`` is not listed, was already read or verified, or cannot be read.
            ChecksumError: the content does not match the manifest (names the file).
        """
        info = self._take(rel)
        try:
            data = (self.path / rel).read_bytes()
        except OSError as exc:
            raise BundleError(_problem(self.path, rel, f"is unreadable ({exc}). Restore it or re-export the "
                                       "bundle.")) from exc
        _check_content(self.path, rel, info, len(data), hashlib.sha256(data).hexdigest())
        return data

    def load(self, rel: str, opener: Callable[[Path], T]) -> T:
        """``opener(path)`` of listed file ``rel``, hashed just before; refused if the file changed meanwhile.

        The opener reads the file itself (onnxruntime from its path: no second copy of the graph in memory).
        The file's identity and change time are taken before it is hashed and compared after it is opened,
        so content written, or a file put in its place, while it was hashed or read is never served.

        Raises:
            BundleError: ``rel`` is not listed, was already read, or changed while it was loaded.
            ChecksumError: the content does not match the manifest (names the file).
        """
        info = self._take(rel)
        file = self.path / rel
        before = _identity(file)
        _check_content(self.path, rel, info, before[2], sha256_file(file))
        result = opener(file)
        if _identity(file) != before:
            raise ChecksumError(_problem(self.path, rel, "changed while it was loaded: the bundle is being "
                                         "modified. Load it again once it is complete."))
        return result

    def verify_rest(self) -> int:
        """Hash every file not read with :meth:`read_bytes`; the bytes of the whole bundle.

        Raises:
            ChecksumError: a file's size or sha256 does not match (names the file).
        """
        for rel, info in list(self._unread.items()):
            file = self.path / rel
            _check_content(self.path, rel, info, file.stat().st_size, sha256_file(file))
            del self._unread[rel]
        return sum(int(info["size"]) for info in self.manifest.files.values())


def read_manifest(directory: Path, *, verify: bool = True, signing_key: str | None = None) -> BundleManifest:
    """Read ``manifest.json`` and check its digest (and signature, when a key is set); with ``verify``
    (the default) also check every file in the folder and every file ``pipeline.json`` names.

    ``signing_key`` defaults to ``$AIFORGE_SIGNING_KEY``; when one is set, unsigned bundles are refused.

    Raises:
        BundleError: no manifest, unreadable manifest, unknown format version, a missing, unlisted,
            linked or outside file, a pipeline naming a file outside the bundle or not listed.
        ChecksumError: the manifest's digest or signature, or a file's size or sha256, does not match
            (the message names the file).
    """
    if verify:
        files = BundleFiles(directory, signing_key=signing_key)
        files.verify_rest()
        return files.manifest
    path = directory / MANIFEST
    raw = _parse(directory, path)
    _check_self(directory, raw, _signing_key(signing_key))
    manifest = _manifest_from(raw, path)
    _check_entries(directory, manifest.files)
    return manifest


def verify_bundle(directory: Path, *, signing_key: str | None = None) -> BundleCheck:
    """Check a bundle folder as loading does and say what was checked (what ``aiforge verify`` prints).

    Raises:
        BundleError: as :func:`read_manifest`, naming the file and what is wrong with it.
    """
    key = _signing_key(signing_key)
    manifest = read_manifest(directory, signing_key=key)
    size = sum(int(info["size"]) for info in manifest.files.values())
    signature = "verified" if key else ("present, not checked" if manifest.signature else "none")
    return BundleCheck(path=directory, manifest=manifest, files=len(manifest.files), bytes=size,
                       digest=manifest.digest, signature=signature)

"""Tampered bundles are refused, each with a message naming the file (issue 16, item 5).

Every case damages a private copy of a real exported bundle (German credit, tabular: a real ONNX graph, small
enough to copy per case) and must be refused both by ``aiforge.verify`` and by ``Runtime.load``. The cases
marked "re-digested" play an attacker who knows the (public) digest algorithm and rewrites the manifest's
digest after editing it: the manifest then checks out, and the file-level checks must still catch the edit.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import aiforge
from aiforge.bundle import Registry, Runtime
from aiforge.bundle.format import MANIFEST, SIGNING_KEY_ENV, manifest_digest, manifest_signature, sha256_file
from aiforge.errors import BundleError

KEY = "test-signing-key-9d2f4e6a8b0c"


@pytest.fixture(scope="module")
def pristine(german: Any) -> Path:
    """The session's German credit bundle (read only: every case works on a copy)."""
    return Path(german.export.path)


@pytest.fixture()
def bundle(pristine: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "bundle"))


# --- how the cases tamper -----------------------------------------------------------------------


def _raw(b: Path) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads((b / MANIFEST).read_text(encoding="utf-8"))
    return raw


def _save(b: Path, raw: dict[str, Any], *, redigest: bool = False, sign_with: str | None = None) -> None:
    if redigest or sign_with:
        raw["digest"] = manifest_digest(raw)
    if sign_with:
        raw["signature"] = manifest_signature(raw, key=sign_with)
    (b / MANIFEST).write_text(json.dumps(raw, indent=2), encoding="utf-8")


def _edit(b: Path, change: Callable[[dict[str, Any]], None], *, redigest: bool = False) -> None:
    raw = _raw(b)
    change(raw)
    _save(b, raw, redigest=redigest)


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _graph(b: Path) -> str:
    return str(json.loads((b / "pipeline.json").read_text(encoding="utf-8"))["graph"])


def _point_pipeline(b: Path, target: str) -> None:
    """Point the pipeline's graph at ``target``, then make the manifest agree with the new pipeline.json."""
    pipeline = json.loads((b / "pipeline.json").read_text(encoding="utf-8"))
    pipeline["graph"] = target
    (b / "pipeline.json").write_text(json.dumps(pipeline), encoding="utf-8")
    raw = _raw(b)
    raw["files"]["pipeline.json"] = {"sha256": sha256_file(b / "pipeline.json"),
                                     "size": (b / "pipeline.json").stat().st_size}
    _save(b, raw, redigest=True)


def _list_outside(b: Path, rel: str) -> None:
    """Copy the graph outside the bundle and list it in the manifest as ``rel`` with its true checksum."""
    outside = b.parent / "outside.onnx"
    shutil.copy2(b / _graph(b), outside)
    raw = _raw(b)
    raw["files"][rel] = {"sha256": sha256_file(outside), "size": outside.stat().st_size}
    _save(b, raw, redigest=True)


def _drop_entry_and_corrupt(b: Path, *, redigest: bool) -> None:
    raw = _raw(b)
    del raw["files"]["card.md"]
    _save(b, raw, redigest=redigest)
    (b / "card.md").write_text("# anything at all\n", encoding="utf-8")


def _empty_files_corrupt_pipeline(b: Path, *, redigest: bool) -> None:
    _edit(b, lambda raw: raw.__setitem__("files", {}), redigest=redigest)
    pipeline = json.loads((b / "pipeline.json").read_text(encoding="utf-8"))
    pipeline["labels"] = ["good", "bad"]  # swaps every answer
    (b / "pipeline.json").write_text(json.dumps(pipeline), encoding="utf-8")


def _set_sha(raw: dict[str, Any], rel: str) -> None:
    raw["files"][rel]["sha256"] = "0" * 64


def _symlink_graph(b: Path) -> None:
    rel = _graph(b)
    outside = b.parent / "outside.onnx"
    shutil.copy2(b / rel, outside)  # same bytes: only the link itself is wrong
    (b / rel).unlink()
    (b / rel).symlink_to(outside)


def _sign(b: Path, key: str) -> None:
    _save(b, _raw(b), sign_with=key)


def _signed_then_edited(b: Path) -> None:
    _sign(b, KEY)
    _edit(b, lambda raw: raw["metrics"].update({k: 1.0 for k in raw["metrics"]}), redigest=True)


@dataclass(frozen=True)
class Case:
    """One way of tampering; ``names`` is the file the refusal must name, ``what`` a phrase saying what is wrong."""

    id: str
    tamper: Callable[[Path], None]
    names: str | Callable[[Path], str]
    what: str
    key: str | None = None  # AIFORGE_SIGNING_KEY while loading


CASES = [
    Case("graph-byte-flipped", lambda b: _flip(b / _graph(b)), _graph, "does not match its sha256"),
    Case("card-truncated", lambda b: (b / "card.md").write_text("#", encoding="utf-8"), "card.md",
         "does not match its sha256"),
    Case("listed-file-deleted", lambda b: (b / "metrics.json").unlink(), "metrics.json", "missing"),
    Case("unlisted-file-added", lambda b: shutil.copy2(b / _graph(b), b / "extra.onnx"), "extra.onnx",
         "not listed"),
    Case("unlisted-file-in-subfolder", lambda b: ((b / "sub").mkdir(), (b / "sub" / "notes.txt").write_text("x")),
         "sub/notes.txt", "not listed"),
    Case("entry-removed-then-file-corrupted", lambda b: _drop_entry_and_corrupt(b, redigest=False), MANIFEST,
         "digest"),
    Case("entry-removed-re-digested-then-corrupted", lambda b: _drop_entry_and_corrupt(b, redigest=True),
         "card.md", "not listed"),
    Case("files-emptied-pipeline-corrupted", lambda b: _empty_files_corrupt_pipeline(b, redigest=False), MANIFEST,
         "digest"),
    Case("files-emptied-re-digested-pipeline-corrupted", lambda b: _empty_files_corrupt_pipeline(b, redigest=True),
         "pipeline.json", "not listed"),
    Case("sha256-edited-in-manifest", lambda b: _edit(b, lambda r: _set_sha(r, "card.md")), MANIFEST, "digest"),
    Case("sha256-edited-re-digested", lambda b: _edit(b, lambda r: _set_sha(r, "card.md"), redigest=True),
         "card.md", "does not match its sha256"),
    Case("size-edited-in-manifest", lambda b: _edit(b, lambda r: r["files"]["card.md"].update(size=1)), MANIFEST,
         "digest"),
    Case("metrics-edited", lambda b: _edit(b, lambda r: r["metrics"].update({k: 1.0 for k in r["metrics"]})),
         MANIFEST, "digest"),
    Case("spec-serve-host-edited", lambda b: _edit(b, lambda r: r["spec"]["serve"].update(host="0.0.0.0")),
         MANIFEST, "digest"),
    Case("task-edited", lambda b: _edit(b, lambda r: r.update(task="text-classification")), MANIFEST, "digest"),
    Case("digest-removed", lambda b: _edit(b, lambda r: r.pop("digest")), MANIFEST, "no digest"),
    Case("digest-malformed", lambda b: _edit(b, lambda r: r.update(digest="md5:abc")), MANIFEST, "digest"),
    Case("downgraded-to-format-1", lambda b: _edit(b, lambda r: (r.pop("digest"), r.update(format_version=1))),
         MANIFEST, "Re-export"),
    Case("pipeline-graph-outside", lambda b: (shutil.copy2(b / _graph(b), b.parent / "outside.onnx"),
                                              _point_pipeline(b, "../outside.onnx")), "pipeline.json", "outside"),
    Case("pipeline-graph-absolute", lambda b: (shutil.copy2(b / _graph(b), b.parent / "abs.onnx"),
                                               _point_pipeline(b, str(b.parent / "abs.onnx"))),
         "pipeline.json", "outside"),
    Case("pipeline-graph-not-listed", lambda b: _point_pipeline(b, "other.onnx"), "pipeline.json", "not listed"),
    Case("manifest-entry-outside", lambda b: _list_outside(b, "../outside.onnx"), "../outside.onnx", "outside"),
    Case("manifest-entry-absolute", lambda b: _list_outside(b, str(b.parent / "outside.onnx")),
         lambda b: str(b.parent / "outside.onnx"),
         "outside"),
    Case("manifest-entry-respelled", lambda b: _edit(b, lambda r: r["files"].__setitem__(
        "./card.md", r["files"].pop("card.md")), redigest=True), "./card.md", "not a plain relative path"),
    Case("manifest-entry-malformed", lambda b: _edit(b, lambda r: r["files"]["card.md"].update(sha256="xyz"),
                                                     redigest=True), "card.md", "malformed"),
    Case("graph-replaced-by-symlink", _symlink_graph, _graph, "symbolic link"),
    Case("fifo-in-bundle", lambda b: os.mkfifo(b / "queue.onnx"), "queue.onnx", "not a regular file"),
    Case("manifest-not-json", lambda b: (b / MANIFEST).write_text("{not json", encoding="utf-8"), MANIFEST,
         "unreadable"),
    Case("manifest-missing", lambda b: (b / MANIFEST).unlink(), MANIFEST, "not a bundle"),
    Case("unsigned-while-key-set", lambda b: None, MANIFEST, "not signed", key=KEY),
    Case("signed-with-another-key", lambda b: _sign(b, "some-other-key"), MANIFEST, "signature", key=KEY),
    Case("signed-then-edited-re-digested", _signed_then_edited, MANIFEST, "signature", key=KEY),
]


def test_there_are_at_least_22_cases() -> None:
    assert len(CASES) >= 22 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_tampered_bundle_is_refused_naming_the_file(case: Case, bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    case.tamper(bundle)
    named = case.names(bundle) if callable(case.names) else case.names
    if case.key:
        monkeypatch.setenv(SIGNING_KEY_ENV, case.key)
    else:
        monkeypatch.delenv(SIGNING_KEY_ENV, raising=False)
    for attempt in (lambda: aiforge.verify(bundle), lambda: Runtime.load(bundle)):
        with pytest.raises(BundleError) as info:
            attempt()
        message = str(info.value)
        assert repr(named) in message, message
        assert case.what in message, message


# --- what is accepted, and what verify reports ------------------------------------------------------


def test_untouched_copy_verifies_and_loads(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SIGNING_KEY_ENV, raising=False)
    check = aiforge.verify(bundle)
    on_disk = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file() and p.name != MANIFEST)
    assert sorted(check.manifest.files) == on_disk and check.files == len(on_disk)
    assert check.bytes == sum((bundle / rel).stat().st_size for rel in on_disk)
    assert check.digest == _raw(bundle)["digest"] and check.digest.startswith("sha256:")
    assert check.signature == "none"
    assert Runtime.load(bundle).manifest.digest == check.digest


def test_a_signed_bundle_verifies_with_its_key(pristine: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Registering with AIFORGE_SIGNING_KEY set signs the manifest; loading with the key checks it."""
    manifest = aiforge.verify(pristine).manifest  # unsigned
    monkeypatch.setenv(SIGNING_KEY_ENV, KEY)
    registry = Registry(tmp_path / "home")
    staged = registry.staging_dir()
    for rel in manifest.files:
        shutil.copy2(pristine / rel, staged / rel)
    added = registry.add(staged, name="signed", task=manifest.task, extra=dict(manifest.extra))
    assert _raw(added.path)["signature"].startswith("hmac-sha256:")
    assert aiforge.verify(added.path).signature == "verified"
    assert Runtime.load(added.path).name == "signed"
    monkeypatch.delenv(SIGNING_KEY_ENV)
    assert aiforge.verify("signed", home=registry.home).signature == "present, not checked"


def _cli(*args: str | Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != SIGNING_KEY_ENV}
    env.update(AIFORGE_HOME=str(home), HF_HUB_OFFLINE="1", COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "aiforge.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=120)


def test_verify_command_prints_the_result(bundle: Path, tmp_path: Path) -> None:
    ok = _cli("verify", bundle, home=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout and _raw(bundle)["digest"] in ok.stdout and "signature: none" in ok.stdout
    _flip(bundle / "card.md")
    bad = _cli("verify", bundle, home=tmp_path)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "'card.md'" in bad.stderr and "does not match its sha256" in bad.stderr


# --- loading hashes each file once, and serves the bytes it hashed (text bundles) ------------------------------


@pytest.fixture()
def text_copy(trained_bundle: Any, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained_bundle.export.path, tmp_path / "text"))


def _flip_last_byte(file: Path) -> None:
    data = bytearray(file.read_bytes())
    data[-1] ^= 0xFF
    file.write_bytes(bytes(data))


def test_a_text_bundle_loads_the_bytes_it_hashed(text_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aiforge.bundle.format import BundleFiles
    from aiforge.errors import ChecksumError

    monkeypatch.delenv(SIGNING_KEY_ENV, raising=False)
    graphs = json.loads((text_copy / "pipeline.json").read_text(encoding="utf-8"))["graphs"]
    files = BundleFiles(text_copy)  # manifest, listing and pipeline.json checked; no graph read yet
    _flip_last_byte(text_copy / graphs["int8"])  # changed after the bundle was opened, before it is read
    with pytest.raises(ChecksumError, match=repr(graphs["int8"])):
        files.read_bytes(graphs["int8"])
    with pytest.raises(BundleError, match="already read"):
        files.read_bytes(graphs["int8"])  # each file is read (and hashed) once
    with pytest.raises(BundleError, match="not listed"):
        files.read_bytes("elsewhere.onnx")


def test_a_file_changed_while_it_is_loaded_is_refused(text_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """BundleFiles.load hashes a file, lets the runtime open it from its path, and refuses it if the file was
    written, or another file put in its place, meanwhile (so the bytes served are the bytes hashed)."""
    from aiforge.bundle.format import BundleFiles
    from aiforge.errors import ChecksumError

    monkeypatch.delenv(SIGNING_KEY_ENV, raising=False)
    graphs = json.loads((text_copy / "pipeline.json").read_text(encoding="utf-8"))["graphs"]
    assert BundleFiles(text_copy).load(graphs["int8"], lambda f: f.read_bytes()[:4]) == (
        text_copy / graphs["int8"]).read_bytes()[:4]  # unchanged: opened

    def written_meanwhile(file: Path) -> bytes:
        data = file.read_bytes()
        _flip_last_byte(file)  # as if another process wrote it after it was hashed
        return data

    with pytest.raises(ChecksumError, match="changed while it was loaded"):
        BundleFiles(text_copy).load(graphs["int8"], written_meanwhile)

    def replaced_meanwhile(file: Path) -> bytes:
        other = file.with_name("other")
        other.write_bytes(file.read_bytes())
        other.replace(file)  # same bytes, another file: refused all the same
        return b""

    with pytest.raises(ChecksumError, match="changed while it was loaded"):
        BundleFiles(text_copy).load("tokenizer.json", replaced_meanwhile)


@pytest.mark.parametrize("which", ["fp32", "tokenizer.json", "card.md"])
def test_a_text_bundle_with_any_file_changed_is_refused(which: str, text_copy: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The int8 graph is loaded from its bytes; the fp32 graph, the tokenizer and the card are still checked."""
    from aiforge.errors import ChecksumError

    monkeypatch.delenv(SIGNING_KEY_ENV, raising=False)
    graphs = json.loads((text_copy / "pipeline.json").read_text(encoding="utf-8"))["graphs"]
    rel = graphs.get(which, which)
    assert Runtime.load(text_copy, precision="int8", threads=1).precision == "int8"  # intact: loads
    _flip_last_byte(text_copy / rel)
    with pytest.raises(ChecksumError, match=repr(rel)):
        Runtime.load(text_copy, precision="int8", threads=1)

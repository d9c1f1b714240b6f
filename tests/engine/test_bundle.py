"""Bundles, the Registry and the torch-free Runtime, on the session's trained bundle."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import aiforge
from aiforge.bundle import FORMAT_VERSION, Parity, Registry, Runtime, read_manifest
from aiforge.bundle.format import MANIFEST, manifest_digest, sha256_file
from aiforge.errors import BundleError, ChecksumError, InputError, RegistryError
from aiforge.tasks.text.data import load_text_dataset


@pytest.fixture(scope="module")
def runtime_fp32(trained_bundle) -> Runtime:
    return aiforge.load(trained_bundle.export.path, precision="fp32")


@pytest.fixture(scope="module")
def test_texts(trained_bundle) -> list[str]:
    return load_text_dataset(trained_bundle.data / "test.csv", text_column="text", label_column="category").texts


@pytest.fixture()
def bundle_copy(trained_bundle, tmp_path: Path) -> Path:
    """A private copy of the bundle folder that a test may damage."""
    return Path(shutil.copytree(trained_bundle.export.path, tmp_path / "bundle"))


# --- format -----------------------------------------------------------------------------------


def test_manifest_lists_every_file_with_checksum_and_size(trained_bundle) -> None:
    path = trained_bundle.export.path
    raw = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    assert raw["format_version"] == FORMAT_VERSION == 2
    assert raw["digest"] == manifest_digest(raw)
    assert raw["name"] == trained_bundle.name
    assert raw["version"] == "1"
    on_disk = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file() and p.name != MANIFEST)
    assert sorted(raw["files"]) == on_disk
    for required in ("model.onnx", "pipeline.json", "tokenizer.json", "metrics.json", "card.md"):
        assert required in raw["files"]
    for rel, info in raw["files"].items():
        assert info["size"] == (path / rel).stat().st_size, rel
        assert info["sha256"] == sha256_file(path / rel), rel
    assert raw["backbone"]["licence"] == "Apache-2.0"


def test_fp32_parity_record(trained_bundle) -> None:
    parity = trained_bundle.export.parity
    assert parity.details["fp32_ok"] is True
    assert parity.max_abs_diff < 1e-4
    assert parity.samples == len(trained_bundle.fit.splits.test)
    stored = read_manifest(trained_bundle.export.path).extra["parity"]
    assert stored["fp32_vs_torch_max_abs_prob_diff"] == parity.max_abs_diff
    assert stored == json.loads(json.dumps(parity.to_dict()))
    assert Parity.from_dict(stored, diff_key="fp32_vs_torch_max_abs_prob_diff").to_dict() == stored


def test_default_precision_matches_parity_record(trained_bundle) -> None:
    parity = trained_bundle.export.parity
    rt = aiforge.load(trained_bundle.export.path)
    pipeline = json.loads((trained_bundle.export.path / "pipeline.json").read_text(encoding="utf-8"))
    assert rt.precision == pipeline["default_precision"]
    if parity.int8 is not None and parity.int8.ok:
        assert rt.precision == "int8"
        assert (trained_bundle.export.path / "model.int8.onnx").is_file()
    else:
        assert rt.precision == "fp32"
        assert not (trained_bundle.export.path / "model.int8.onnx").exists()


def test_runtime_predicts_like_the_pytorch_model(trained_bundle, runtime_fp32: Runtime, test_texts) -> None:
    fitted = trained_bundle.fit.fitted
    torch_probs = fitted.predict_proba(test_texts)
    onnx_probs = runtime_fp32.predict_proba(test_texts)
    assert runtime_fp32.labels == fitted.labels
    assert np.abs(onnx_probs - torch_probs).max() < 1e-4
    torch_labels = [p["label"] for p in fitted.predict(test_texts)]
    assert [p.label for p in runtime_fp32.predict(test_texts)] == torch_labels


def test_prediction_shape(runtime_fp32: Runtime) -> None:
    [pred] = runtime_fp32.predict(["I still have not received my new card"])
    assert set(pred.scores) == set(runtime_fp32.labels)
    assert pred.label in runtime_fp32.labels
    assert pred.score == max(pred.scores.values())
    assert sum(pred.scores.values()) == pytest.approx(1.0, abs=1e-5)
    assert runtime_fp32.predict([]) == []


@pytest.mark.parametrize("bad", [["fine", 3], [None], "a single string", [b"bytes"]])
def test_predict_rejects_non_strings(runtime_fp32: Runtime, bad) -> None:
    with pytest.raises(InputError, match="list of strings"):
        runtime_fp32.predict(bad)


def test_predict_is_thread_safe(runtime_fp32: Runtime, test_texts) -> None:
    texts = test_texts[::2]
    serial = runtime_fp32.predict_proba(texts)
    start = threading.Barrier(8)

    def work(_: int) -> np.ndarray:
        start.wait(timeout=60)
        return runtime_fp32.predict_proba(texts)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(work, range(8)))
    for probs in results:
        np.testing.assert_allclose(probs, serial, rtol=0, atol=1e-6)
        assert (probs.argmax(1) == serial.argmax(1)).all()


def test_evaluate_matches_fit_test_accuracy(trained_bundle, runtime_fp32: Runtime) -> None:
    metrics = aiforge.evaluate(runtime_fp32, trained_bundle.data / "test.csv")
    fit_test = trained_bundle.fit.test
    assert metrics.n == fit_test.n == 80
    assert metrics.accuracy == pytest.approx(fit_test.accuracy, abs=1e-6)
    assert metrics.macro_f1 == pytest.approx(fit_test.macro_f1, abs=1e-6)


# --- integrity --------------------------------------------------------------------------------


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("rel", ["pipeline.json", "model.onnx"])
def test_tampered_file_raises_checksum_error_naming_it(bundle_copy: Path, rel: str) -> None:
    target = bundle_copy / rel
    _flip_byte(target, target.stat().st_size // 2)
    with pytest.raises(ChecksumError, match=rel.replace(".", r"\.")):
        Runtime.load(bundle_copy)
    with pytest.raises(ChecksumError, match=rel.replace(".", r"\.")):
        read_manifest(bundle_copy)


def test_missing_listed_file_raises_bundle_error(bundle_copy: Path) -> None:
    (bundle_copy / "card.md").unlink()
    with pytest.raises(BundleError, match=r"card\.md"):
        read_manifest(bundle_copy)


def test_unknown_format_version_is_refused(bundle_copy: Path) -> None:
    manifest = bundle_copy / MANIFEST
    raw = json.loads(manifest.read_text(encoding="utf-8"))
    raw["format_version"] = 99
    manifest.write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(BundleError, match="format version 99") as info:
        Runtime.load(bundle_copy)
    assert not isinstance(info.value, ChecksumError)


def test_missing_manifest_is_refused(bundle_copy: Path) -> None:
    (bundle_copy / MANIFEST).unlink()
    with pytest.raises(BundleError, match="not a bundle"):
        Runtime.load(bundle_copy)


def test_untouched_copy_loads(bundle_copy: Path, runtime_fp32: Runtime) -> None:
    rt = Runtime.load(bundle_copy, precision="fp32")
    text = ["how long until my card arrives?"]
    assert rt.predict(text)[0].label == runtime_fp32.predict(text)[0].label


# --- registry ---------------------------------------------------------------------------------


def test_registry_list_get_resolve(trained_bundle) -> None:
    reg = Registry(trained_bundle.home)
    name = trained_bundle.name
    [record] = [r for r in reg.records() if r.name == name]
    assert record.version == 1
    assert record.task == "text-classification"
    assert record.path == trained_bundle.export.path
    assert record.metrics["accuracy"] == pytest.approx(trained_bundle.fit.test.accuracy)
    assert reg.get(name) == record
    assert reg.get(name, 1) == record
    assert reg.get(name, "latest") == record
    assert reg.resolve(name) == record.path
    assert reg.resolve(f"{name}:1") == record.path
    assert reg.resolve(f"{name}:latest") == record.path
    assert reg.resolve(record.path) == record.path
    assert reg.manifest(name).name == name


def test_load_by_name_uses_the_registry(trained_bundle) -> None:
    rt = aiforge.load(f"{trained_bundle.name}:1", home=trained_bundle.home)
    assert rt.path == trained_bundle.export.path
    assert (rt.name, rt.version) == (trained_bundle.name, "1")
    assert rt.describe()["labels"] == trained_bundle.fit.fitted.labels


def test_registry_unknown_name_or_version(trained_bundle) -> None:
    reg = Registry(trained_bundle.home)
    with pytest.raises(RegistryError, match="no bundle named 'nope'") as info:
        reg.get("nope")
    assert str(trained_bundle.home) in str(info.value)
    assert trained_bundle.name in str(info.value)  # lists what is registered
    with pytest.raises(RegistryError, match="has no version 7"):
        reg.get(trained_bundle.name, 7)
    with pytest.raises(RegistryError):
        aiforge.load("nope", home=trained_bundle.home)


def test_empty_registry_lists_nothing(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "home")
    assert reg.records() == []
    with pytest.raises(RegistryError, match="Registered: none"):
        reg.get("anything")


def test_registry_home_defaults_to_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AIFORGE_HOME", str(tmp_path / "elsewhere"))
    assert Registry().home == tmp_path / "elsewhere"


def test_exporting_again_registers_version_2(trained_bundle, tmp_path: Path) -> None:
    # A private copy of the session's index, so version 2 does not change what other tests resolve.
    home = tmp_path / "home"
    home.mkdir()
    for db in trained_bundle.home.glob("registry.db*"):
        shutil.copy2(db, home / db.name)
    app = aiforge.App(trained_bundle.app.spec, home=home)
    app.result_ = trained_bundle.fit

    second = app.export()

    assert second.record.version == 2
    assert second.manifest.version == "2"
    assert second.path == home / "bundles" / trained_bundle.name / "2"
    reg = Registry(home)
    assert [r.version for r in reg.versions(trained_bundle.name)] == [1, 2]
    assert reg.resolve(trained_bundle.name) == second.path
    assert reg.resolve(f"{trained_bundle.name}:1") == trained_bundle.export.path
    assert not any((home / ".staging").iterdir())
    read_manifest(second.path)  # checksums hold


def test_export_before_fit_is_an_error(trained_bundle, tmp_path: Path) -> None:
    app = aiforge.App(trained_bundle.app.spec, home=tmp_path)
    with pytest.raises(aiforge.AiforgeError, match=r"fit\(\) before export\(\)"):
        app.export()


def test_length_groups_cover_every_index_once_and_bound_padding() -> None:
    import numpy as np

    from aiforge.bundle.tokens import length_groups

    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 70, size=500)
    groups = length_groups(lengths, 32, ratio=1.2, slack=2)
    flat = np.concatenate(groups)
    assert sorted(flat.tolist()) == list(range(500))
    for g in groups:
        assert 1 <= len(g) <= 32
        assert lengths[g].max() <= lengths[g].min() * 1.2 + 2
    assert len(groups) > 500 // 32  # cut by length, not only by size


# --- staging: kill -9 mid-export, and never loading an unfinished export (issue 16, item 9) ---------------

_EXPORTER = """
import sys, time
from aiforge.bundle import BundleParts, Parity, Registry, export_bundle
from aiforge.spec import BaseSpec

def write(staged):
    (staged / "weights.bin").write_bytes(bytes(4 << 20))
    print(staged, flush=True)
    time.sleep(300)  # killed here, mid-export
    raise SystemExit("not killed")

spec = BaseSpec.from_dict({"name": "killed", "task": "recommendation", "data": {"sample": "movielens"}})
export_bundle(Registry(sys.argv[1]), spec, write)
"""


def _exporter(home: Path) -> tuple[subprocess.Popen[str], Path]:
    """A child process stopped inside an export, and its staging folder."""
    proc = subprocess.Popen([sys.executable, "-c", _EXPORTER, str(home)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.stdout is not None
    staged = Path(proc.stdout.readline().strip())
    assert staged.is_dir() and staged.parent == home / ".staging", staged
    return proc, staged


def _small_export(home: Path) -> Path:
    from aiforge.bundle import BundleParts, export_bundle
    from aiforge.spec import BaseSpec

    def write(staged: Path) -> BundleParts:
        (staged / "graph.onnx").write_bytes(b"graph")
        return BundleParts(pipeline={"graph": "graph.onnx"}, metrics={}, card="# next\n",
                           parity=Parity(samples=1, max_abs_diff=0.0), headline={})

    spec = BaseSpec.from_dict({"name": "next", "task": "recommendation", "data": {"sample": "movielens"}})
    return export_bundle(Registry(home), spec, write).path


def test_kill_9_mid_export_is_cleaned_at_the_next_registry_write(tmp_path: Path) -> None:
    home = tmp_path / "home"
    killed, dead_folder = _exporter(home)
    live, live_folder = _exporter(home)
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
        assert dead_folder.is_dir()  # kill -9 leaves it behind...

        exported = _small_export(home)  # ...until the next registry write

        assert not dead_folder.exists()
        assert live_folder.is_dir() and (live_folder / "weights.bin").stat().st_size == 4 << 20  # a live export's
        assert read_manifest(exported).name == "next"
        assert sorted(p.name for p in (home / ".staging").iterdir()) == sorted([live_folder.name,
                                                                                f"{live_folder.name}.owner"])
    finally:
        live.kill()
        live.wait(timeout=30)
    Registry(home).clean_staging()
    assert list((home / ".staging").iterdir()) == []


def test_staging_folders_without_an_owner_go_only_when_old(tmp_path: Path) -> None:
    home = tmp_path / "home"
    old, fresh = home / ".staging" / ("a" * 32), home / ".staging" / ("b" * 32)  # made before owners were recorded
    for folder in (old, fresh):
        folder.mkdir(parents=True)
        (folder / "weights.bin").write_bytes(b"x")
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))
    _small_export(home)
    assert not old.exists() and fresh.is_dir()


def test_a_folder_in_staging_is_never_loaded(trained_bundle, tmp_path: Path) -> None:
    """A kill between writing the manifest and the rename leaves a complete bundle in .staging: refused."""
    from aiforge.bundle.format import write_manifest

    registry = Registry(tmp_path / "home")
    staged = registry.staging_dir()
    manifest = read_manifest(trained_bundle.export.path)
    for rel in manifest.files:
        (staged / rel).parent.mkdir(parents=True, exist_ok=True)
        os.link(trained_bundle.export.path / rel, staged / rel)  # same file system: no 100 MB copy
    write_manifest(staged, task=manifest.task, name=manifest.name, version="1", extra=manifest.extra)
    for load in (lambda: Runtime.load(staged), lambda: aiforge.verify(staged), lambda: Runtime.load(str(staged))):
        with pytest.raises(RegistryError, match=r"\.staging.*never loaded"):
            load()


def test_int8_gate_reads_every_held_out_text(trained_bundle) -> None:
    """The int8 gate scores the whole test split (up to INT8_GATE_TEXTS), not only the PyTorch check's sample."""
    from aiforge.tasks.text.parity import INT8_GATE_TEXTS

    stored = read_manifest(trained_bundle.export.path).extra["parity"]
    assert stored["int8_gate_samples"] == min(len(trained_bundle.fit.splits.test), INT8_GATE_TEXTS)
    assert stored["int8_gate_margin"] == stored["int8_top1_agreement"] - stored["int8_min_agreement"]

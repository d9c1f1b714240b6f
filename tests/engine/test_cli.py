"""The ``aiforge`` command line, run as a real subprocess against the session's bundle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import aiforge


def run_cli(*args: str | Path, home: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AIFORGE_HOME": str(home), "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "aiforge.cli", *map(str, args)],
        capture_output=True, text=True, env=env, timeout=timeout,
    )


def _json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def _one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


# --- happy paths ------------------------------------------------------------------------------


def test_predict_texts(trained_bundle) -> None:
    texts = ["I still have not received my new card", "how do I activate my card?"]
    done = run_cli("predict", trained_bundle.name, *texts, home=trained_bundle.home)
    assert done.returncode == 0, done.stderr
    rows = _json_lines(done.stdout)
    assert len(rows) == len(done.stdout.strip().splitlines()) == 2
    rt = aiforge.load(trained_bundle.name, home=trained_bundle.home)
    expected = rt.predict(texts)
    for row, text, pred in zip(rows, texts, expected, strict=True):
        assert row["text"] == text
        assert row["label"] == pred.label
        assert row["score"] == pytest.approx(pred.score, abs=1e-6)
        assert len(row["scores"]) == 5  # --top defaults to 5
        assert row["label"] in row["scores"]
        assert list(row["scores"].values()) == sorted(row["scores"].values(), reverse=True)


def test_predict_top_option(trained_bundle) -> None:
    done = run_cli("predict", trained_bundle.name, "card not here", "--top", "2", home=trained_bundle.home)
    assert done.returncode == 0, done.stderr
    [row] = _json_lines(done.stdout)
    assert len(row["scores"]) == 2


def test_predict_input_file(trained_bundle, tmp_path: Path) -> None:
    texts = ["where is my card", "can I use apple pay?", "my card payment was declined"]
    path = tmp_path / "in.csv"
    path.write_text("text\n" + "".join(f"{t}\n" for t in texts), encoding="utf-8")
    done = run_cli("predict", f"{trained_bundle.name}:1", "--input", path, home=trained_bundle.home)
    assert done.returncode == 0, done.stderr
    rows = _json_lines(done.stdout)
    assert [r["text"] for r in rows] == texts
    labels = set(trained_bundle.fit.fitted.labels)
    assert all(r["label"] in labels for r in rows)


def test_eval_writes_metrics_json(trained_bundle, tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    test_csv = trained_bundle.data / "test.csv"
    done = run_cli("eval", trained_bundle.name, "--data", test_csv, "-o", out, home=trained_bundle.home)
    assert done.returncode == 0, done.stderr
    metrics = json.loads(out.read_text(encoding="utf-8"))
    expected = aiforge.evaluate(trained_bundle.name, test_csv, home=trained_bundle.home)
    assert metrics["n"] == 80
    assert metrics["accuracy"] == pytest.approx(expected.accuracy)
    assert metrics["macro_f1"] == pytest.approx(expected.macro_f1)
    assert f"wrote {out}" in done.stdout


def test_registry_list(trained_bundle) -> None:
    done = run_cli("registry", "list", home=trained_bundle.home)
    assert done.returncode == 0, done.stderr
    assert str(trained_bundle.home) in done.stdout
    [line] = [ln for ln in done.stdout.splitlines() if trained_bundle.name in ln]
    assert "text-classification" in line
    assert f"{trained_bundle.fit.test.accuracy:.4f}" in line


def test_registry_show(trained_bundle) -> None:
    done = run_cli("registry", "show", trained_bundle.name, home=trained_bundle.home)
    assert done.returncode == 0, done.stderr
    manifest = json.loads(done.stdout)
    assert manifest["name"] == trained_bundle.name
    assert manifest["version"] == "1"
    assert manifest["format_version"] == 2
    assert "model.onnx" in manifest["files"]
    again = run_cli("registry", "show", f"{trained_bundle.name}:1", home=trained_bundle.home)
    assert json.loads(again.stdout) == manifest


# --- errors -----------------------------------------------------------------------------------


def test_missing_spec_is_one_error_line(tmp_path: Path) -> None:
    line = _one_error_line(run_cli("train", tmp_path / "missing.yaml", home=tmp_path / "home"))
    assert "missing.yaml" in line
    assert "spec file not found" in line


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    done = run_cli("--debug", "train", tmp_path / "missing.yaml", home=tmp_path / "home")
    assert done.returncode != 0
    assert "Traceback" in done.stderr
    assert "SpecError" in done.stderr


def test_predict_unknown_name_names_the_registry(tmp_path: Path) -> None:
    home = tmp_path / "home"
    line = _one_error_line(run_cli("predict", "unknown-name", "x", home=home))
    assert "unknown-name" in line
    assert f"registry at {home}" in line


def test_spec_typo_says_did_you_mean(tmp_path: Path) -> None:
    spec = tmp_path / "aiforge.yaml"
    spec.write_text("name: x\ndata:\n  train: t.csv\nmodel:\n  backbon: minilm-l6\n", encoding="utf-8")
    line = _one_error_line(run_cli("train", spec, home=tmp_path / "home"))
    assert "model.backbon" in line
    assert "Did you mean 'backbone'?" in line


def test_predict_needs_texts_or_input(trained_bundle) -> None:
    line = _one_error_line(run_cli("predict", trained_bundle.name, home=trained_bundle.home))
    assert "--input" in line


@pytest.mark.parametrize(("args", "shown"), [(("eval", "x"), "--data"), (("nosuchcmd",), "nosuchcmd")])
def test_usage_error_is_not_a_traceback(tmp_path: Path, args: tuple[str, ...], shown: str) -> None:
    done = run_cli(*args, home=tmp_path)
    assert "Traceback" not in done.stderr
    assert done.returncode == 2
    assert shown in done.stderr


def test_help_exits_zero(tmp_path: Path) -> None:
    done = run_cli("--help", home=tmp_path)
    assert done.returncode == 0, done.stderr
    for verb in ("train", "eval", "predict", "registry", "demo", "audit", "ship", "sample-data"):
        assert verb in done.stdout


@pytest.mark.parametrize(("verb", "says"), [("predict", "image files"), ("bench", "bundles that take texts"),
                                            ("eval", "held-out interactions"), ("ship", "any kind")])
def test_help_says_what_each_kind_takes(tmp_path: Path, verb: str, says: str) -> None:
    done = run_cli(verb, "--help", home=tmp_path)
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())  # rich wraps help text over lines
    assert says in text and "Texts to classify" not in text


# --- end to end -------------------------------------------------------------------------------


@pytest.mark.slow
def test_train_register_predict_round_trip(small_banking: Path, make_head_spec, tmp_path: Path) -> None:
    spec = make_head_spec(small_banking, name="cli-bank", data={"max_per_label": 12},
                          optimize={"quantize": False, "parity_samples": 40})
    # written with paths relative to the yaml, as a user would
    folder = tmp_path / "project"
    folder.mkdir()
    spec["data"]["train"] = os.path.relpath(small_banking / "train.csv", folder)
    spec["data"]["test"] = os.path.relpath(small_banking / "test.csv", folder)
    yaml_path = folder / "aiforge.yaml"
    yaml_path.write_text(json.dumps(spec), encoding="utf-8")  # JSON is YAML
    home = tmp_path / "home"

    done = run_cli("train", yaml_path, "--no-progress", home=home, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "registered cli-bank:1" in done.stdout
    assert "ONNX fp32 vs PyTorch" in done.stdout

    record = aiforge.Registry(home).get("cli-bank")
    assert record.version == 1
    assert record.metrics["accuracy"] > 0.5

    pred = run_cli("predict", "cli-bank", "I am still waiting for my card to arrive", home=home)
    assert pred.returncode == 0, pred.stderr
    [row] = _json_lines(pred.stdout)
    assert row["label"] in aiforge.load("cli-bank", home=home).labels

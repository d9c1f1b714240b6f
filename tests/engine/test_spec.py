"""AppSpec: unknown keys, wrong types, bad files, and path resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiforge.errors import SpecError
from aiforge.spec import load_spec
from aiforge.tasks.text.spec import AppSpec

GOOD = """\
name: intents
data:
  train: data/train.csv
  test: data/test.csv
model:
  backbone: minilm-l6
  mode: head
train:
  epochs: 3
"""


def _write(folder: Path, text: str, name: str = "aiforge.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_valid_spec_loads_with_defaults(tmp_path: Path) -> None:
    spec = AppSpec.from_yaml(_write(tmp_path, GOOD))
    assert spec.name == "intents"
    assert spec.task == "text-classification"
    assert spec.model.mode == "head"
    assert spec.train.epochs == 3
    assert spec.train.batch_size is None
    assert spec.optimize.quantize is True
    assert spec.source == tmp_path / "aiforge.yaml"


def test_relative_data_paths_resolve_against_the_yaml_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "project" / "sub"
    path = _write(folder, GOOD)
    monkeypatch.chdir(tmp_path)  # not the yaml's folder
    spec = load_spec(path)
    assert spec.data.train.is_absolute()
    assert spec.data.train == (folder / "data" / "train.csv").resolve()
    assert spec.data.test == (folder / "data" / "test.csv").resolve()
    assert spec.data.validation is None


def test_absolute_data_paths_are_kept(tmp_path: Path) -> None:
    train = tmp_path / "elsewhere" / "train.csv"
    spec = AppSpec.from_yaml(_write(tmp_path / "a", f"name: x\ndata:\n  train: {train}\n"))
    assert spec.data.train == train


@pytest.mark.parametrize(
    ("yaml_text", "path", "guess"),
    [
        (GOOD + "modle:\n  mode: head\n", "modle", "model"),
        (GOOD.replace("backbone:", "backbon:"), "model.backbon", "backbone"),
        (GOOD.replace("epochs:", "epoch:"), "train.epoch", "epochs"),
        (GOOD.replace("test:", "tset:"), "data.tset", "test"),
    ],
)
def test_unknown_key_names_path_file_and_suggestion(tmp_path: Path, yaml_text: str, path: str, guess: str) -> None:
    file = _write(tmp_path, yaml_text)
    with pytest.raises(SpecError) as info:
        AppSpec.from_yaml(file)
    msg = str(info.value)
    assert f"unknown key {path!r}" in msg
    assert str(file) in msg
    assert f"Did you mean {guess!r}?" in msg


def test_unknown_key_without_close_match_lists_valid_keys(tmp_path: Path) -> None:
    file = _write(tmp_path, GOOD.replace("  mode: head\n", "  zzzzzz: 1\n"))
    with pytest.raises(SpecError, match=r"model\.zzzzzz") as info:
        AppSpec.from_yaml(file)
    assert "Did you mean" not in str(info.value)
    assert "backbone, mode, head, max_length" in str(info.value)


@pytest.mark.parametrize(
    ("old", "new", "path"),
    [
        ("epochs: 3", 'epochs: "many"', "train.epochs"),
        ("epochs: 3", "epochs: 0", "train.epochs"),
        ("mode: head", "mode: huge", "model.mode"),
        ("name: intents", "name: 'bad name!'", "name"),
    ],
)
def test_ill_typed_value_names_the_key_path(tmp_path: Path, old: str, new: str, path: str) -> None:
    file = _write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(SpecError) as info:
        AppSpec.from_yaml(file)
    msg = str(info.value)
    assert f"{file}: {path}:" in msg
    assert new.split(": ", 1)[1].strip("'\"") in msg  # shows what it got


def test_missing_required_key(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="data: required key is missing"):
        AppSpec.from_yaml(_write(tmp_path, "name: x\n"))


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(SpecError, match="spec file not found") as info:
        AppSpec.from_yaml(missing)
    assert str(missing) in str(info.value)


def test_invalid_yaml(tmp_path: Path) -> None:
    file = _write(tmp_path, "name: x\ndata: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML") as info:
        AppSpec.from_yaml(file)
    assert str(file) in str(info.value)


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just a string\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    with pytest.raises(SpecError, match="expected a mapping at the top level"):
        AppSpec.from_yaml(_write(tmp_path, text))


def test_test_file_must_differ_from_train(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"data\.test must not be the same file as data\.train"):
        AppSpec.from_yaml(_write(tmp_path, "name: x\ndata:\n  train: a.csv\n  test: ./a.csv\n"))


def test_from_dict_resolves_against_base_dir(tmp_path: Path) -> None:
    spec = AppSpec.from_dict({"name": "x", "data": {"train": "t.csv"}}, base_dir=tmp_path)
    assert spec.data.train == (tmp_path / "t.csv").resolve()
    assert spec.source is None


def test_spec_is_frozen(tmp_path: Path) -> None:
    spec = AppSpec.from_yaml(_write(tmp_path, GOOD))
    with pytest.raises(Exception, match="frozen"):
        spec.name = "other"  # type: ignore[misc]

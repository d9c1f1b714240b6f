"""The backbone catalog: rows, paths inside installed packages, and actionable errors."""

from __future__ import annotations

import dataclasses
import json

import pytest

from aiforge.errors import BackboneError
from aiforge.hub import CATALOG, Backbone, get_backbone, list_backbones


def test_minilm_files_are_installed() -> None:
    backbone = get_backbone("minilm-l6")
    path = backbone.path()
    assert path.is_dir()
    assert (path / "config.json").is_file()
    assert (path / "tokenizer.json").is_file()
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    assert config["hidden_size"] == backbone.dim == 384


def test_unknown_backbone_suggests_the_nearest() -> None:
    with pytest.raises(BackboneError, match="unknown backbone 'minilm-l7'") as info:
        get_backbone("minilm-l7")
    assert "Did you mean 'minilm-l6'?" in str(info.value)
    assert "Known backbones: " in str(info.value) and "minilm-l6" in str(info.value)


def test_unknown_backbone_without_close_match() -> None:
    with pytest.raises(BackboneError) as info:
        get_backbone("resnet-152-imagenet")
    assert "Did you mean" not in str(info.value)


def test_missing_package_names_the_pip_command() -> None:
    row = dataclasses.replace(CATALOG["minilm-l6"], module="not_a_module_xyz", pip="not-a-package==1.0")
    with pytest.raises(BackboneError) as info:
        row.path()
    assert "pip install not-a-package==1.0" in str(info.value)
    assert "'not-a-package'" in str(info.value)
    assert isinstance(info.value.__cause__, ImportError)


def test_package_without_model_files_is_reported() -> None:
    row = dataclasses.replace(CATALOG["minilm-l6"], model_subdir="no-such-folder")
    with pytest.raises(BackboneError, match=r"no config\.json"):
        row.path()


@pytest.mark.parametrize("row", list_backbones(), ids=lambda b: b.name)
def test_catalog_rows_record_licence_and_provenance(row: Backbone) -> None:
    assert CATALOG[row.name] is row
    assert row.licence.strip()
    assert row.provenance.strip()
    assert "==" in row.pip  # pinned, so the files are reproducible
    assert row.dim > 0
    assert row.max_positions > 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.name = "other"  # type: ignore[misc]


def test_list_backbones_is_sorted() -> None:
    names = [b.name for b in list_backbones()]
    assert names == sorted(CATALOG)
    assert "minilm-l6" in names

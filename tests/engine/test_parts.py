"""The export-and-register sequence (bundle/parts.py) and the typed parity record, without training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aiforge.bundle import BundleParts, Int8Parity, Parity, Registry, export_bundle, read_manifest
from aiforge.errors import BundleError, ExportError
from aiforge.spec import BaseSpec
from aiforge.tasks.base import parity_line
from aiforge.version import __version__

PARITY = Parity(samples=40, max_abs_diff=3e-6, diff_key="fp32_vs_torch_max_abs_prob_diff",
                int8=Int8Parity(ok=False, top1_agreement=0.95, min_agreement=0.99, accuracy=0.9, recipe=None,
                                details={"tries": [{"top1_agreement": 0.95}], "dropped": "below limit"}),
                details={"fp32_ok": True, "source": "test.csv"})


@pytest.fixture
def spec() -> BaseSpec:
    return BaseSpec.from_dict({"name": "parts-demo", "task": "recommendation", "data": {"sample": "movielens"}})


def _writer(staged: Path) -> BundleParts:
    (staged / "graph.onnx").write_bytes(b"not really a graph")
    (staged / "sub").mkdir()
    (staged / "sub" / "ids.json").write_text("[1, 2]", encoding="utf-8")
    return BundleParts(pipeline={"task": "recommendation", "graph": "graph.onnx"}, metrics={"ndcg": 0.31},
                       card="# parts-demo\n", parity=PARITY, headline={"ndcg_at_10": 0.31}, extra={"algorithm": "ease"})


def test_bundle_has_every_file_checksummed_and_the_engine_keys(spec: BaseSpec, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "home")
    exported = export_bundle(registry, spec, _writer)
    files = sorted(p.relative_to(exported.path).as_posix() for p in exported.path.rglob("*") if p.is_file())
    assert files == ["card.md", "graph.onnx", "manifest.json", "metrics.json", "pipeline.json", "sub/ids.json"]
    manifest = read_manifest(exported.path)  # verifies every checksum
    assert sorted(manifest.files) == [f for f in files if f != "manifest.json"]
    assert json.loads((exported.path / "pipeline.json").read_text()) == {"task": "recommendation",
                                                                          "graph": "graph.onnx"}
    assert json.loads((exported.path / "metrics.json").read_text()) == {"ndcg": 0.31}
    assert (exported.path / "card.md").read_text() == "# parts-demo\n"
    extra = manifest.extra
    assert extra["aiforge_version"] == __version__ and extra["algorithm"] == "ease"
    assert extra["metrics"] == {"ndcg_at_10": 0.31}
    assert extra["parity"] == json.loads(json.dumps(PARITY.to_dict()))
    assert extra["spec"]["name"] == "parts-demo" and extra["spec"]["task"] == "recommendation"
    assert exported.parity is PARITY and exported.manifest.task == "recommendation"


def test_headline_metrics_land_in_the_registry_row(spec: BaseSpec, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "home")
    first = export_bundle(registry, spec, _writer)
    second = export_bundle(registry, spec, _writer)
    assert (first.record.version, second.record.version) == (1, 2)
    row = registry.get("parts-demo")
    assert row.version == 2 and row.metrics == {"ndcg_at_10": 0.31} and row.task == "recommendation"
    assert row.path == second.path


def test_failing_writer_leaves_no_staging_folder_and_registers_nothing(spec: BaseSpec, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "home")

    def failing(staged: Path) -> BundleParts:
        (staged / "graph.onnx").write_bytes(b"half written")
        raise ExportError("parity did not hold")

    with pytest.raises(ExportError, match="parity did not hold"):
        export_bundle(registry, spec, failing)
    assert list((registry.home / ".staging").iterdir()) == []
    assert registry.records() == []
    assert not (registry.home / "bundles").exists()


def test_extra_may_not_shadow_an_engine_key(spec: BaseSpec, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "home")

    def shadowing(staged: Path) -> BundleParts:
        parts = _writer(staged)
        return BundleParts(pipeline=parts.pipeline, metrics=parts.metrics, card=parts.card, parity=parts.parity,
                           headline=parts.headline, extra={"metrics": {"ndcg_at_10": 1.0}})

    with pytest.raises(ExportError, match=r"\['metrics'\]"):
        export_bundle(registry, spec, shadowing)
    assert registry.records() == [] and list((registry.home / ".staging").iterdir()) == []


def test_parity_json_keeps_the_stored_key_names_and_round_trips() -> None:
    stored = PARITY.to_dict()
    assert stored["samples"] == 40 and stored["fp32_vs_torch_max_abs_prob_diff"] == 3e-6
    assert stored["int8_ok"] is False and stored["int8_top1_agreement"] == 0.95 and stored["int8_recipe"] is None
    assert stored["int8_dropped"] == "below limit" and stored["int8_tries"] == [{"top1_agreement": 0.95}]
    assert Parity.from_dict(stored, diff_key="fp32_vs_torch_max_abs_prob_diff") == PARITY
    users = Parity(samples=300, max_abs_diff=1e-7, diff_key="max_abs_score_diff", samples_key="users",
                   details={"topk_overlap": 1.0})
    assert users.to_dict() == {"users": 300, "max_abs_score_diff": 1e-7, "topk_overlap": 1.0}
    with pytest.raises(BundleError, match="lacks 'max_abs_score_diff'"):
        Parity.from_dict({"samples": 3}, diff_key="max_abs_score_diff")


def test_parity_line_reads_the_typed_record() -> None:
    line = parity_line(PARITY, " (static)")
    assert line.startswith("ONNX fp32 vs PyTorch max |Δp| = 3.00e-06")
    assert "int8 (static) agreement 0.9500, accuracy 0.9000 (int8 dropped: below limit)" in line
    assert "int8" not in parity_line(Parity(samples=1, max_abs_diff=0.0))

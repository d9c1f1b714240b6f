"""Spec-level groups for images (issue 20): a groups file gives each image its group, the card and ``ship``
audit per group without ``--data``, and a missing image or an unknown file is a clear error.

The group is synthetic but deterministic: ``camera`` is "phone" for every other image of each class folder.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
from vision_helpers import fashion_folders, image_spec, trained_images

from aiforge.audit.ship import ship
from aiforge.bundle.registry import Registry
from aiforge.errors import DataError
from aiforge.tasks.image.data import load_image_splits
from aiforge.tasks.image.group_card import image_group_card
from aiforge.tasks.image.spec import ImageSpec
from ship_helpers import register_with_gates


def groups_file(folder: Path, *, skip: str | None = None, extra: str | None = None) -> Path:
    """A CSV of (path, camera) for every PNG under the Fashion-MNIST folders, paths relative to the root."""
    root = fashion_folders()
    rows = [{"path": str(p.relative_to(root)), "camera": "phone" if int(p.stem) % 2 else "scanner"}
            for p in sorted(root.rglob("*.png")) if str(p.relative_to(root)) != skip]
    if extra:
        rows.append({"path": extra, "camera": "phone"})
    path = folder / "groups.csv"
    path.write_text("", encoding="utf-8")
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "camera"])
        writer.writeheader()
        writer.writerows(rows)
    return root / "groups.csv" if folder == root else path


def grouped_spec(table: Path, **data: Any) -> ImageSpec:
    raw = image_spec()
    raw["data"] = {**raw["data"], "sensitive_features": ["camera"], "groups": str(table), **data}
    return ImageSpec.model_validate(raw)


def test_groups_file_gives_every_image_its_group_and_holds_out_a_test_split(tmp_path: Path) -> None:
    groups = groups_file(fashion_folders())
    splits = load_image_splits(grouped_spec(groups).data, seed=0)
    assert splits.test is not None and set(splits.test.groups["camera"]) == {"phone", "scanner"}
    for part in (splits.train, splits.validation, splits.test):
        assert len(part.groups["camera"]) == len(part)
        assert all(g == ("phone" if int(Path(n).stem) % 2 else "scanner")
                   for n, g in zip(part.names or [], part.groups["camera"], strict=True))
    # no test set: one is held out of train, stratified by label and group, and seeded
    held = load_image_splits(grouped_spec(groups, test=None).data, seed=0)
    assert held.test is not None and "held-out test split" in held.test.source
    assert len(held.train) + len(held.validation) + len(held.test) == 64
    assert held.test.names == load_image_splits(grouped_spec(groups, test=None).data, seed=0).test.names


def test_an_image_without_a_group_or_an_unknown_file_is_a_clear_error(tmp_path: Path) -> None:
    root = fashion_folders()
    missing = groups_file(tmp_path, skip="train/Bag/003.png")
    # paths in a groups file are relative to it: copy it next to the images
    (root / "groups-missing.csv").write_text(missing.read_text(), encoding="utf-8")
    with pytest.raises(DataError, match=r"groups-missing.csv: no row for image '.*train/Bag/003.png'"):
        load_image_splits(grouped_spec(root / "groups-missing.csv").data, seed=0)
    unknown = groups_file(tmp_path, extra="train/Bag/999.png")
    (root / "groups-unknown.csv").write_text(unknown.read_text(), encoding="utf-8")
    with pytest.raises(DataError, match=r"lists 'train/Bag/999.png', which is not a file"):
        load_image_splits(grouped_spec(root / "groups-unknown.csv").data, seed=0)
    with pytest.raises(DataError, match="need a groups file"):
        load_image_splits(grouped_spec(root / "groups-unknown.csv", groups=None).data, seed=0)
    with pytest.raises(ValueError, match=r"data\.groups needs data\.sensitive_features"):
        ImageSpec.model_validate({**image_spec(), "data": {**image_spec()["data"], "groups": str(missing)}})


@pytest.fixture(scope="module")
def grouped_bundle(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    groups = groups_file(fashion_folders())
    return {"trained": trained_images(), "groups": groups,
            "data": {"sensitive_features": ["camera"], "groups": str(groups)}}


def test_card_section_and_ship_per_group_without_data(grouped_bundle: dict[str, Any], tmp_path: Path) -> None:
    trained, groups = grouped_bundle["trained"], grouped_bundle["groups"]
    spec = grouped_spec(groups, validation_fraction=0.25)
    spec = spec.model_copy(update={"gates": spec.gates.model_copy(update={"min_group_size": 5,
                                                                          "max_accuracy_difference": 1.0})})
    splits = load_image_splits(spec.data, seed=0)
    card = image_group_card(spec, trained.fit.fitted, splits)
    assert "## Per-group audit" in card and "### By camera" in card
    assert "| phone | 12 |" in card and "| scanner | 12 |" in card and "| `max_accuracy_difference` | camera |" in card
    # ship with no --data: the stored spec's test folder, each image's group from the groups file
    for side, limit in (("pass", 1.0), ("fail", 0.0)):
        home = tmp_path / side
        path = register_with_gates(trained.export.path, home, {"max_accuracy_difference": limit,
                                                               "min_group_size": 5, "decide": "point"},
                                   data=grouped_bundle["data"])
        report = ship(path, home=home)
        (gate,) = report.results
        assert gate.feature == "camera" and report.rows_per_group() == {"camera": {"phone": 12, "scanner": 12}}
        gap = report.measurements.audit["features"]["camera"]["accuracy_difference"]
        assert gate.decision == ("pass" if side == "pass" or gap == 0 else "fail")
        assert Registry(home).get(report.name).stage == ("production" if gate.decision == "pass" else "none")
    # the default rule (upper bound) on 12-image groups: a limit of 0 cannot pass, the gap's interval is wide
    home = tmp_path / "ub"
    path = register_with_gates(trained.export.path, home, {"max_accuracy_difference": 0.0, "min_group_size": 5},
                               data=grouped_bundle["data"])
    assert not ship(path, home=home).passed

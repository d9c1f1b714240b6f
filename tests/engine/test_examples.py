"""The shipped example spec and the README's promises."""

from __future__ import annotations

from pathlib import Path

from aiforge.tasks.text.spec import AppSpec

REPO = Path(__file__).resolve().parents[2]


def test_banking77_example_spec_is_valid_and_its_data_exists() -> None:
    path = REPO / "examples" / "banking77" / "aiforge.yaml"
    spec = AppSpec.from_yaml(path)
    assert spec.name == "banking77"
    assert spec.task == "text-classification"
    assert spec.data.label_column == "category"
    assert spec.data.test is not None
    for data in (spec.data.train, spec.data.test):
        assert data.is_absolute()
        assert data.is_file(), f"{path} points at {data}, which does not exist"


def test_readme_starts_with_demo_and_test_commands() -> None:
    readme = REPO / "README.md"
    assert readme.is_file(), "README.md is missing"
    head = "\n".join(readme.read_text(encoding="utf-8").splitlines()[:20])
    assert "make demo" in head
    assert "make test" in head


def test_every_example_spec_validates_against_its_tasks_schema() -> None:
    from aiforge.spec import BaseSpec
    from aiforge.tasks.registry import kind_names

    specs = sorted((REPO / "examples").glob("*/aiforge.yaml"))
    assert len(specs) >= 7
    tasks = set()
    for path in specs:
        spec = BaseSpec.from_yaml(path)
        assert spec.name, path
        tasks.add(spec.task)
    assert tasks == set(kind_names()), f"examples cover {sorted(tasks)}, tasks are {kind_names()}"

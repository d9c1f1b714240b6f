"""Shared fixtures: isolated environment, the real BANKING77 data, and one trained bundle per kind per session.

The text bundle and the tabular one are here; the chat and recommendation ones come from the kind folders'
fixture modules, loaded below as plugins, and the image one is ``vision_helpers.trained_images()`` (cached
per process). The kinds contract suite (tests/engine/test_kinds_contract.py) uses all of them, so no kind
trains a second copy for it.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"

# The helper modules of the kind folders (chat_helpers, tabular_helpers, vision_helpers...) are imported by
# bare name. pytest puts a folder on sys.path only when it collects a test module there; the contract suite
# in tests/engine needs every kind's helpers, whichever test files a run selects.
for _folder in ("chat", "driving", "image", "recommend", "tabular", "text"):
    if str(TESTS / _folder) not in sys.path:
        sys.path.insert(0, str(TESTS / _folder))

from banking_helpers import head_spec_dict, read_rows, take, write_rows  # noqa: E402

pytest_plugins = ["chat_fixtures", "recommend_helpers"]
DEFAULT_SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# The small slice every training test uses: 8 intents, 24 train and 10 test examples each.
N_LABELS = 8
N_TRAIN_PER_LABEL = 24
N_TEST_PER_LABEL = 10


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No test sees the user's registry or reaches the Hugging Face Hub."""
    monkeypatch.setenv("AIFORGE_HOME", str(tmp_path_factory.mktemp("aiforge-home")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The BANKING77 folder (train.csv, test.csv); $AIFORGE_SHARED_DATA points at its parent ``data``."""
    root = Path(os.environ.get("AIFORGE_SHARED_DATA") or DEFAULT_SHARED_DATA)
    folder = root / "banking77"
    missing = [name for name in ("train.csv", "test.csv") if not (folder / name).is_file()]
    if missing:
        pytest.fail(
            f"BANKING77 data not found: {folder} lacks {missing}. The tests need the real data set; "
            "put it at ../shared/data/banking77 beside the repository or set AIFORGE_SHARED_DATA "
            "to the folder that holds banking77/.",
            pytrace=False,
        )
    return folder


@pytest.fixture(scope="session")
def small_banking(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real slice of BANKING77: train.csv and test.csv (columns text, category), 8 intents."""
    train = read_rows(shared_data / "train.csv")
    test = read_rows(shared_data / "test.csv")
    labels = sorted({r["category"] for r in train})[:N_LABELS]
    folder = tmp_path_factory.mktemp("small-banking")
    write_rows(folder / "train.csv", take(train, labels, N_TRAIN_PER_LABEL))
    write_rows(folder / "test.csv", take(test, labels, N_TEST_PER_LABEL))
    return folder


@pytest.fixture(scope="session")
def make_head_spec() -> Any:
    """``head_spec_dict`` as a fixture, so test modules need not import conftest."""
    return head_spec_dict


@dataclass(frozen=True)
class TrainedBundle:
    """What the session's one fit and export produced."""

    home: Path
    data: Path
    spec: dict[str, Any]
    app: Any  # aiforge.App
    fit: Any  # TextFitResult
    export: Any  # aiforge.ExportResult

    @property
    def name(self) -> str:
        return str(self.spec["name"])


@pytest.fixture(scope="session")
def trained_bundle(small_banking: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainedBundle:
    """A head-mode app fitted and exported once for the whole session (read it, never modify it)."""
    from aiforge import App
    from aiforge.tasks.text.spec import AppSpec

    home = tmp_path_factory.mktemp("trained-home")
    spec = head_spec_dict(small_banking)
    app = App(AppSpec.from_dict(spec), home=home)
    fit = app.fit(progress=False)
    exported = app.export()
    return TrainedBundle(home=home, data=small_banking, spec=spec, app=app, fit=fit, export=exported)


@pytest.fixture(scope="session")
def german(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A tabular app on German credit (logistic regression), fitted and exported once (read it, never modify it)."""
    from tabular_helpers import fit_export, german_spec

    return fit_export(german_spec("german-serve"), tmp_path_factory.mktemp("g-serve"))


@pytest.fixture(scope="session")
def records(german: Any) -> list[dict[str, Any]]:
    """The first 20 test rows of :func:`german` as JSON records (what a client sends)."""
    rows: list[dict[str, Any]] = json.loads(german.result.data.test.frame.head(20).to_json(orient="records"))
    return rows

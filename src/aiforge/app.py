"""The Python API: ``App`` (fit, export) and the bundle verbs (load, evaluate, predict_file).

Every CLI command is one call into this module.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiforge.audit.metrics import Metrics, classification_metrics
from aiforge.bundle.format import BundleManifest
from aiforge.bundle.registry import BundleRecord, Registry
from aiforge.bundle.runtime import Runtime
from aiforge.errors import AiforgeError, DataError
from aiforge.spec import AppSpec

if TYPE_CHECKING:
    from aiforge.tasks.text_classification import FitResult

__all__ = ["App", "ExportResult", "evaluate", "load", "predict_file"]

__version__ = "0.1.0"


@dataclass(frozen=True)
class ExportResult:
    """A registered bundle: where it is, its manifest and its parity record."""

    record: BundleRecord
    manifest: BundleManifest
    parity: dict[str, Any]

    @property
    def path(self) -> Path:
        return self.record.path


class App:
    """An application defined by an :class:`AppSpec`: fit it, then export it to a bundle."""

    def __init__(self, spec: AppSpec, *, home: str | Path | None = None) -> None:
        self.spec = spec
        self.registry = Registry(home)
        self.result_: FitResult | None = None

    @classmethod
    def from_yaml(cls, path: str | Path, *, home: str | Path | None = None) -> App:
        """Load ``aiforge.yaml``.

        Raises:
            SpecError: the spec is missing or invalid.
        """
        return cls(AppSpec.from_yaml(path), home=home)

    def fit(self, *, progress: bool = True) -> FitResult:
        """Train and evaluate on validation and test data.

        Raises:
            DataError: a data check failed.
            BackboneError: the backbone is unknown or its package is missing.
        """
        from aiforge.tasks.base import get_task

        result: FitResult = get_task(self.spec.task).fit(self.spec, progress=progress)
        self.result_ = result
        return result

    def export(self) -> ExportResult:
        """Export the fitted model to ONNX, check parity, write the card, register the bundle.

        Raises:
            AiforgeError: ``fit`` has not run.
            ExportError: export failed or fp32 parity did not hold.
        """
        from aiforge.audit.card import text_classifier_card

        result = self.result_
        if result is None:
            raise AiforgeError("call fit() before export().")
        spec, fitted, splits = self.spec, result.fitted, result.splits
        staged = self.registry.staging_dir()
        try:
            parity = fitted.export(staged, parity_data=splits.test or splits.validation)
            metrics = {
                "validation": result.validation.to_dict(),
                "test": result.test.to_dict() if result.test else None,
                "train_seconds": result.train_seconds,
                "history": result.history,
            }
            (staged / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
            data = {
                "train": str(spec.data.train), "validation": str(spec.data.validation or "split from train"),
                "test": str(spec.data.test) if spec.data.test else None, "n_train": len(splits.train),
                "n_validation": len(splits.validation), "n_test": len(splits.test) if splits.test else 0,
            }
            card = text_classifier_card(
                name=spec.name, backbone=fitted.backbone, mode=spec.model.mode, labels=fitted.labels,
                data=data, metrics=metrics, parity=parity, train_seconds=result.train_seconds,
            )
            (staged / "card.md").write_text(card, encoding="utf-8")
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        headline = (result.test or result.validation).headline()
        extra = {
            "aiforge_version": __version__,
            "backbone": {"name": fitted.backbone.name, "licence": fitted.backbone.licence,
                         "provenance": fitted.backbone.provenance},
            "mode": spec.model.mode,
            "columns": {"text": spec.data.text_column, "label": spec.data.label_column},
            "metrics": headline,
            "parity": parity,
            "spec": spec.model_dump(mode="json"),
        }
        record, manifest = self.registry.add(staged, name=spec.name, task=spec.task, extra=extra, metrics=headline)
        return ExportResult(record, manifest, parity)


def load(name_or_path: str | Path, *, version: int | str | None = None, precision: str = "auto",
         home: str | Path | None = None) -> Runtime:
    """Load a bundle by folder or registered name (latest version unless given).

    Raises:
        RegistryError: unknown name or version.
        BundleError: the bundle is corrupt, incomplete or of an unknown format.
    """
    return Runtime.load(name_or_path, version=version, precision=precision, home=home)


def evaluate(bundle: str | Path | Runtime, data: str | Path, *, text_column: str | None = None,
             label_column: str | None = None, home: str | Path | None = None) -> Metrics:
    """Score a bundle on a labelled file (columns default to those it was trained with).

    Raises:
        DataError: the file or its columns are bad, or it holds labels the bundle never saw.
    """
    from aiforge.data.text import check_test_labels, load_text_dataset

    rt = bundle if isinstance(bundle, Runtime) else load(bundle, home=home)
    cols = rt.manifest.extra.get("columns", {})
    ds = load_text_dataset(data, text_column=text_column or cols.get("text", "text"),
                           label_column=label_column or cols.get("label", "label"))
    check_test_labels(ds, rt.labels)
    return classification_metrics(ds.labels, rt.predict_proba(ds.texts), rt.labels)


def predict_file(bundle: str | Path | Runtime, path: str | Path, *, text_column: str | None = None,
                 home: str | Path | None = None) -> list[dict[str, Any]]:
    """Predict every text in a CSV/JSONL/Parquet file or a plain-text file (one text a line).

    Raises:
        DataError: the file is missing, unreadable or lacks the text column.
    """
    from aiforge.data.text import load_text_dataset

    rt = bundle if isinstance(bundle, Runtime) else load(bundle, home=home)
    p = Path(path)
    if p.suffix.lower() == ".txt":
        if not p.is_file():
            raise DataError(f"{p}: input file not found.")
        texts = [line for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not texts:
            raise DataError(f"{p}: no non-empty lines to predict.")
    else:
        col = text_column or rt.manifest.extra.get("columns", {}).get("text", "text")
        texts = load_text_dataset(p, text_column=col, label_column="", need_labels=False).texts
    return [{"text": t, **pred.to_dict()} for t, pred in zip(texts, rt.predict(texts), strict=True)]

"""Runtime: load a bundle and predict with onnxruntime, numpy and tokenizers only."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from aiforge.bundle.format import BundleManifest, read_manifest
from aiforge.bundle.registry import Registry
from aiforge.bundle.tokens import encode_batches
from aiforge.errors import BundleError, InputError

__all__ = ["Prediction", "Runtime", "TextInputs"]


class TextInputs(BaseModel):
    """What a text-classification bundle takes: a list of texts."""

    model_config = ConfigDict(extra="forbid")
    inputs: list[str] = Field(min_length=1)


@dataclass(frozen=True)
class Prediction:
    """The top label, its probability, and the probability of every label."""

    label: str
    score: float
    scores: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


class Runtime:
    """A loaded bundle. Thread-safe: ``predict`` may be called from many threads at once."""

    input_schema: type[BaseModel] = TextInputs

    def __init__(self, path: Path, manifest: BundleManifest, *, precision: str = "auto",
                 threads: int | None = None, batch_size: int = 64) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.path = path
        self.manifest = manifest
        self.batch_size = batch_size
        try:
            self.pipeline: dict[str, Any] = json.loads((path / "pipeline.json").read_text(encoding="utf-8"))
            graphs: dict[str, str] = self.pipeline["graphs"]
            self.labels: list[str] = list(self.pipeline["labels"])
            max_length = int(self.pipeline["max_length"])
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise BundleError(f"{path}: pipeline.json is missing or incomplete ({exc}).") from exc
        chosen = self.pipeline.get("default_precision", "fp32") if precision == "auto" else precision
        if chosen not in graphs:
            raise BundleError(f"{path}: no {chosen!r} graph in this bundle; it has {sorted(graphs)}.")
        self.precision: str = chosen
        self.tokenizer = Tokenizer.from_file(str(path / self.pipeline.get("tokenizer", "tokenizer.json")))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=max_length)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
        try:
            self.session = ort.InferenceSession(str(path / graphs[chosen]), options, providers=providers)
        except Exception as exc:
            raise BundleError(f"{path}: cannot load {graphs[chosen]} ({exc}).") from exc
        self._output = self.pipeline.get("output", "probabilities")

    @classmethod
    def load(cls, name_or_path: str | Path, *, version: int | str | None = None, precision: str = "auto",
             home: str | Path | None = None, threads: int | None = None) -> Runtime:
        """Load a bundle by folder, ``NAME`` or ``NAME:VERSION`` (latest by default).

        Raises:
            RegistryError: unknown name or version.
            BundleError: the bundle is incomplete, corrupt or of an unknown format.
            ChecksumError: a file does not match its manifest (names the file).
        """
        path = Registry(home).resolve(name_or_path, version)
        manifest = read_manifest(path)
        return cls(path, manifest, precision=precision, threads=threads)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Probabilities, one row per text, columns in ``labels`` order.

        Texts are sorted by token length and run in batches, so padding stays small.

        Raises:
            InputError: ``texts`` is not a list of strings.
        """
        if not isinstance(texts, list | tuple) or not all(isinstance(t, str) for t in texts):
            raise InputError("predict() takes a list of strings.")
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        if not texts:
            return out
        for idx, ids, mask in encode_batches(self.tokenizer, list(texts), self.batch_size):
            out[idx] = self.session.run([self._output], {"input_ids": ids, "attention_mask": mask})[0]
        return out

    def predict(self, items: list[str]) -> list[Prediction]:
        """The top label and all probabilities for each text, in input order.

        Raises:
            InputError: ``items`` is not a list of strings.
        """
        probs = self.predict_proba(items)
        return [
            Prediction(self.labels[int(p.argmax())], float(p.max()),
                       {y: float(v) for y, v in zip(self.labels, p, strict=True)})
            for p in probs
        ]

    def describe(self) -> dict[str, Any]:
        """Name, version, task, precision, labels and headline metrics, for listings and servers."""
        return {"name": self.name, "version": self.version, "task": self.manifest.task,
                "precision": self.precision, "labels": self.labels,
                "metrics": self.manifest.extra.get("metrics", {})}

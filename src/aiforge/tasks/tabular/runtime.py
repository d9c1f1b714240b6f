"""TabularRuntime: records (JSON objects) in, label and probability out; onnxruntime + numpy only."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aiforge.audit.metrics import classification_metrics
from aiforge.bundle.format import BundleManifest
from aiforge.bundle.inputs import check_strings, loads_json
from aiforge.bundle.runtime import ItemLimits, Runtime, onnx_session
from aiforge.data.readers import read_table
from aiforge.errors import BundleError, DataError, InputError
from aiforge.tasks.tabular.data import frame_columns
from aiforge.tasks.tabular.schema import TabularSchema, finish_columns, records_to_columns

if TYPE_CHECKING:
    from aiforge.audit.metrics import Metrics


__all__ = ["TabularRuntime"]


_V2_NUMERIC = {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}


class TabularRuntime(Runtime):
    """A tabular-classification bundle: one ONNX graph from the column inputs to ``probabilities``."""

    task = "tabular-classification"

    def __init__(self, path: Path, manifest: BundleManifest, *, threads: int | None = None) -> None:
        super().__init__(path, manifest)
        try:
            self.labels = [str(y) for y in self.pipeline["labels"]]
            self.schema = TabularSchema.from_dict(self.pipeline["schema"])
            graph = path / self.pipeline["graph"]
        except (KeyError, TypeError) as exc:
            raise BundleError(f"{path}: pipeline.json is incomplete ({exc}).") from exc
        self.precision = "fp32"
        self.session = onnx_session(graph, threads=threads)
        self.label_column: str = self.pipeline.get("label_column", "label")
        self.sensitive_features: list[str] = list(self.pipeline.get("sensitive_features", []))

    @classmethod
    def open(cls, path: Path, manifest: BundleManifest, *, precision: str = "auto",
             threads: int | None = None) -> TabularRuntime:
        if precision not in ("auto", "fp32"):
            raise BundleError(f"{path}: tabular bundles have one fp32 graph; precision {precision!r} is not available.")
        return cls(path, manifest, threads=threads)

    @property
    def sensitive_at_prediction(self) -> list[str]:
        """Sensitive columns a client must send (post-processing mitigation), else empty."""
        return [c.name for c in self.schema.columns if c.role == "sensitive"]

    # --- server surface -------------------------------------------------------------------

    def parse_items(self, items: list[Any], where: str, limits: ItemLimits) -> list[Any]:
        """Check each record: every required field present, numbers numeric, categories strings.

        Raises:
            InputError: names ``where[i].field`` and what was expected.
        """
        for i, item in enumerate(items):
            if isinstance(item, dict):  # a lone surrogate would fail inside onnxruntime, with its whole batch
                check_strings(item, f"{where}[{i}]", max_chars=limits.max_text_chars)
        records_to_columns(items, self.schema, where)
        return items

    def v2_inputs(self, tensors: list[dict[str, Any]]) -> list[Any]:
        """Records from v2 tensors: one tensor per column (shape [n] or [n, 1]), or one BYTES
        tensor named ``records`` holding one JSON object per record.

        Raises:
            InputError: a tensor is malformed or the columns disagree on the row count.
        """
        if len(tensors) == 1 and tensors[0].get("name") == "records":
            return self._v2_records(tensors[0])
        columns: dict[str, list[Any]] = {}
        rows: int | None = None
        for k, t in enumerate(tensors):
            name, dtype = str(t.get("name")), str(t.get("datatype", "")).upper()
            where = f"inputs[{k}] ({name!r})"
            shape, data = list(t.get("shape") or []), list(t.get("data") or [])
            if any(not isinstance(d, int) or d < 0 for d in shape) or math.prod(shape) != len(data) \
                    or (len(shape) == 2 and shape[1] != 1) or len(shape) not in (1, 2):
                raise InputError(f"{where}: shape {shape} must be [n] or [n, 1] and match {len(data)} data elements")
            if rows is not None and len(data) != rows:
                raise InputError(f"{where}: {len(data)} rows, but earlier inputs have {rows}")
            rows = len(data)
            if dtype not in _V2_NUMERIC and dtype != "BYTES":
                raise InputError(f"{where}: datatype {dtype!r} is not supported; use FP32/INT64 for numbers, "
                                 "BYTES for categories")
            columns[name] = data
        known = {c.name for c in self.schema.columns}
        unknown = sorted(set(columns) - known)
        if unknown:
            raise InputError(f"unknown input tensor(s) {unknown}; this model takes {sorted(known)} "
                             "(or one BYTES tensor named 'records' of JSON objects)")
        return [{name: values[i] for name, values in columns.items()} for i in range(rows or 0)]

    @staticmethod
    def _v2_records(tensor: dict[str, Any]) -> list[Any]:
        data = list(tensor.get("data") or [])
        shape = list(tensor.get("shape") or [])
        if str(tensor.get("datatype", "")).upper() != "BYTES" or math.prod(shape) != len(data):
            raise InputError("inputs[0] ('records'): must be BYTES with a shape matching its data")
        out = []
        for i, s in enumerate(data):
            where = f"inputs[0].data[{i}]"
            record = s if isinstance(s, dict) else loads_json(s, where) if isinstance(s, str) else s
            if not isinstance(record, dict):
                raise InputError(f"{where}: expected a JSON object (one record), got {type(record).__name__}")
            out.append(record)
        return out

    def v2_metadata_inputs(self) -> list[dict[str, Any]]:
        out = []
        for c in self.schema.columns:
            params: dict[str, Any] = {"role": c.role, "kind": c.kind, "required": c.required}
            if c.groups:
                params["groups"] = list(c.groups)
                params["note"] = "sensitive feature needed at prediction time by the post-processing mitigation"
            out.append({"name": c.name, "datatype": "FP32" if c.kind == "numeric" else "BYTES", "shape": [-1],
                        "parameters": params})
        out.append({"name": "records", "datatype": "BYTES", "shape": [-1],
                    "parameters": {"note": "alternative to per-column tensors: one JSON object per record"}})
        return out

    def predict_proba(self, items: list[Any]) -> np.ndarray:
        """Probabilities [n, 2] (columns in ``labels`` order) for JSON records.

        Raises:
            InputError: a record is missing a field or holds a value of the wrong type.
        """
        if not items:
            return np.zeros((0, 2), dtype=np.float32)
        return self.proba_columns(finish_columns(records_to_columns(items, self.schema, "items"), self.schema))

    def proba_columns(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        """Probabilities for a ready graph feed (see ``aiforge.tasks.tabular.data.frame_columns``)."""
        out = self.session.run(["probabilities"], feed)[0]
        return np.asarray(out, dtype=np.float32)

    def warmup(self) -> None:
        example = self.pipeline.get("example")
        if isinstance(example, dict):
            self.predict([example, example])

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "input_schema": [c.to_dict() for c in self.schema.columns],
                "sensitive_at_prediction": self.sensitive_at_prediction,
                "mitigation": self.pipeline.get("mitigation", {})}

    # --- CLI surface ----------------------------------------------------------------------

    def _frame_feed(self, path: str | Path) -> tuple[Any, dict[str, np.ndarray]]:

        df = read_table(Path(path), infer_types=True)
        return df, frame_columns(df, self.schema, str(path))

    def evaluate_file(self, path: str | Path, *, columns: Mapping[str, str] | None = None) -> Metrics:

        label = (columns or {}).get("label") or self.label_column
        df, feed = self._frame_feed(path)
        if label not in df.columns:
            raise DataError(f"{path}: label column {label!r} not found. Columns are {list(df.columns)}.")
        truth = df[label].astype(str).tolist()
        unknown = sorted(set(truth) - set(self.labels))
        if unknown:
            raise DataError(f"{path}: column {label!r} holds {unknown[:5]}, not one of {self.labels}.")
        return classification_metrics(truth, self.proba_columns(feed), self.labels)

    def predict_file(self, path: str | Path, *, columns: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        _, feed = self._frame_feed(path)
        probs = self.proba_columns(feed)
        return [{"row": i, "label": self.labels[int(p.argmax())], "score": float(p.max()),
                 "scores": {y: float(v) for y, v in zip(self.labels, p, strict=True)}} for i, p in enumerate(probs)]

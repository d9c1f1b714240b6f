"""The input schema of a tabular bundle, and the one code path that turns inputs into columns.

Training (from a DataFrame) and serving (from JSON records) both end in :func:`finish_columns`,
so the ONNX graph sees exactly what scikit-learn saw: numbers as float32 (missing = NaN),
categories as strings (missing = ""), derived features computed by the same numpy code.
numpy only: the torch-free Runtime imports this module.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from aiforge.errors import InputError

__all__ = ["DERIVED_OPS", "Column", "DerivedOp", "TabularSchema", "finish_columns", "records_to_columns"]


MISSING_CATEGORY = ""


@dataclass(frozen=True)
class Column:
    """One input column: ``kind`` numeric or categorical; ``role`` feature or sensitive."""

    name: str
    kind: str
    role: str = "feature"
    required: bool = True
    groups: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The JSON form kept in pipeline.json."""
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "role": self.role, "required": self.required}
        if self.groups:
            out["groups"] = list(self.groups)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Column:
        return cls(str(d["name"]), str(d["kind"]), str(d.get("role", "feature")), bool(d.get("required", True)),
                   tuple(str(g) for g in d.get("groups", ())))


@dataclass(frozen=True)
class DerivedOp:
    """A derived-feature operation: how many input columns it takes and its numpy function."""

    name: str
    arity: int
    fn: Callable[..., np.ndarray]


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(b != 0, a / np.where(b != 0, b, 1), np.nan)
    return out.astype(np.float32)


DERIVED_OPS: dict[str, DerivedOp] = {op.name: op for op in (
    DerivedOp("log1p", 1, lambda a: np.sign(a) * np.log1p(np.abs(a))),
    DerivedOp("difference", 2, lambda a, b: a - b),
    DerivedOp("ratio", 2, _ratio),
    DerivedOp("sum", 2, lambda a, b: a + b),
    DerivedOp("product", 2, lambda a, b: a * b),
)}


@dataclass(frozen=True)
class TabularSchema:
    """Raw input columns (what a client sends), derived features, and the graph's inputs in order."""

    columns: tuple[Column, ...]
    derived: tuple[dict[str, Any], ...]
    graph_inputs: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"columns": [c.to_dict() for c in self.columns], "derived": list(self.derived),
                "graph_inputs": list(self.graph_inputs)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TabularSchema:
        return cls(tuple(Column.from_dict(c) for c in d["columns"]), tuple(d.get("derived", ())),
                   tuple(d["graph_inputs"]))

    def kind_of(self, name: str) -> str:
        """``numeric`` or ``categorical`` for a raw or derived column."""
        for c in self.columns:
            if c.name == name:
                return c.kind
        return "numeric"  # derived features are numeric


def finish_columns(raw: dict[str, np.ndarray], schema: TabularSchema) -> dict[str, np.ndarray]:
    """Add derived features to raw columns (numbers float32, categories str) and return the graph feed."""
    cols = dict(raw)
    for d in schema.derived:
        op = DERIVED_OPS[d["op"]]
        with np.errstate(all="ignore"):
            cols[d["name"]] = op.fn(*(cols[c] for c in d["columns"])).astype(np.float32)
    return {name: cols[name].reshape(-1, 1) for name in schema.graph_inputs}


def records_to_columns(items: list[Any], schema: TabularSchema, where: str) -> dict[str, np.ndarray]:
    """Validate JSON records and turn them into raw columns.

    Numbers may be int, float or null (null = missing, imputed); categories are strings or null
    (null = missing). Sensitive columns needed at prediction time must hold a known group.
    Unknown keys are ignored (records often carry the label or an id).

    Raises:
        InputError: names the record, the field and what was expected.
    """
    n = len(items)
    out: dict[str, np.ndarray] = {}
    for c in schema.columns:
        if c.kind == "numeric":
            out[c.name] = np.empty(n, dtype=np.float32)
        else:
            out[c.name] = np.empty(n, dtype=object)
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise InputError(f"{where}[{i}]: expected a JSON object (a record of column: value), "
                             f"got {type(item).__name__}")
        for c in schema.columns:
            if c.name not in item:
                if c.required:
                    raise InputError(f"{where}[{i}]: missing field {c.name!r} ({_expects(c)})")
                value = None
            else:
                value = item[c.name]
            out[c.name][i] = _cell(value, c, f"{where}[{i}].{c.name}")
    return out


def _expects(c: Column) -> str:
    if c.groups:
        return f"one of {list(c.groups)}; needed at prediction time by the post-processing mitigation"
    return "a number or null" if c.kind == "numeric" else "a string or null"


def _cell(value: Any, c: Column, where: str) -> Any:
    if c.kind == "numeric":
        if value is None:
            return np.nan
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InputError(f"{where}: expected a number or null, got {type(value).__name__} {value!r:.40}")
        if not math.isfinite(value) or abs(value) > 3.0e38:
            raise InputError(f"{where}: expected a finite number, got {value!r}")
        return value
    if c.groups:
        if not isinstance(value, str) or value not in c.groups:
            raise InputError(f"{where}: expected one of {list(c.groups)} (the post-processing mitigation needs "
                             f"the group at prediction time), got {value!r:.40}")
        return value
    if value is None:
        return MISSING_CATEGORY
    if not isinstance(value, str | int | float | bool):
        raise InputError(f"{where}: expected a string or null, got {type(value).__name__}")
    return str(value)

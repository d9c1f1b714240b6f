"""The tabular kind's playground page: the form's fields from the bundle's input schema (``panel.js``).

Each field has its type, whether it is required, the example record's value and, for categories,
the values the model was trained on (read from the one-hot encoders of the bundle's ONNX graph).
"""

from __future__ import annotations

from typing import Any

from aiforge.bundle.runtime import Runtime
from aiforge.serve.web.page import KindPage
from aiforge.tasks.tabular.runtime import TabularRuntime

__all__ = ["PAGE", "allowed_values", "examples"]


def allowed_values(runtime: TabularRuntime) -> dict[str, list[str]]:
    """For each categorical input of the graph, the categories its one-hot encoder knows ({} if unreadable)."""
    import onnx  # lazy: protobuf parsing of the graph, only when a page asks (never on the serving path)

    try:
        graph = onnx.load(str(runtime.path / runtime.pipeline["graph"]), load_external_data=False).graph
    except Exception:  # an unreadable graph only costs the form its drop-downs
        return {}
    inputs = {i.name for i in graph.input}
    producer = {out: node for node in graph.node for out in node.output}

    def source(name: str) -> str:  # back through Gather/Cast/Reshape... to the graph input feeding the encoder
        seen = set()
        while name not in inputs and name in producer and name not in seen and producer[name].input:
            seen.add(name)
            name = producer[name].input[0]
        return name

    out: dict[str, list[str]] = {}
    for node in graph.node:
        if node.op_type == "OneHotEncoder" and node.input:
            for attr in node.attribute:
                if attr.name == "cats_strings":
                    out[source(node.input[0])] = [s.decode("utf-8") for s in attr.strings]
    return out


def examples(runtime: Runtime) -> dict[str, Any]:
    """The form: one field per input column, with its kind, requiredness, example value and allowed values."""
    if not isinstance(runtime, TabularRuntime):
        return {}
    allowed = allowed_values(runtime)
    example = runtime.pipeline.get("example", {})
    fields = []
    for column in runtime.schema.columns:
        if column.role == "label":
            continue
        field: dict[str, Any] = {**column.to_dict(), "example": example.get(column.name)}
        values = list(column.groups) or allowed.get(column.name, [])
        if values:
            field["allowed"] = values
        fields.append(field)
    return {"fields": fields, "sensitive_at_prediction": runtime.sensitive_at_prediction,
            "positive_label": runtime.pipeline.get("positive_label")}


PAGE = KindPage("aiforge.tasks.tabular", examples=examples)

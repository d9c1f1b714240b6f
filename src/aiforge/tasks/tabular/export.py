"""Export tabular models to one ONNX graph (skl2onnx), with custom nodes for the mitigations.

- plain / reweighed pipeline: skl2onnx as is.
- ExponentiatedGradient: each base pipeline converted, prefixed and merged into one graph that
  shares the column inputs; ``p = Σ wᵢ·labelᵢ`` (fairlearn's ``_pmf_predict``).
- ThresholdOptimizer: the base pipeline's score, a ``LabelEncoder`` from the sensitive column to a
  group index, and per-group tables gathered by that index (fairlearn's interpolation).

Every graph has one output, ``probabilities`` [N, 2] float32 (negative, positive).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from aiforge.bundle.parts import Parity
from aiforge.bundle.runtime import onnx_session
from aiforge.errors import ExportError
from aiforge.tasks.tabular.models import TabularModel
from aiforge.tasks.tabular.schema import TabularSchema

__all__ = ["export_tabular", "onnx_proba"]


OPSET = {"": 17, "ai.onnx.ml": 3}


def _patch_skl2onnx() -> None:
    """skl2onnx 1.20 passes numpy/bool flags for HistGradientBoosting's missing-value routing,
    which onnx 1.23 rejects; cast them to int (the attribute is an int list)."""
    import skl2onnx.common.tree_ensemble as te

    if getattr(te.add_node, "_aiforge_patched", False):
        return
    original = te.add_node

    def add_node(*args: Any, nodes_missing_value_tracks_true: Any = 0, **kwargs: Any) -> Any:
        return original(*args, nodes_missing_value_tracks_true=int(nodes_missing_value_tracks_true), **kwargs)

    add_node._aiforge_patched = True  # type: ignore[attr-defined]
    te.add_node = add_node


def _convert_pipeline(pipe: Any, schema: TabularSchema, inputs: list[str]) -> onnx.ModelProto:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    _patch_skl2onnx()
    types = [(n, FloatTensorType([None, 1]) if schema.kind_of(n) == "numeric" else StringTensorType([None, 1]))
             for n in inputs]
    try:
        model = convert_sklearn(pipe, initial_types=types, options={id(pipe.named_steps["clf"]): {"zipmap": False}},
                                target_opset=OPSET)
    except Exception as exc:
        raise ExportError(f"skl2onnx cannot convert the {type(pipe.named_steps['clf']).__name__} pipeline "
                          f"({str(exc).splitlines()[0][:300]}).") from exc
    # every graph input is declared even if the pipeline ignores it, so feeds are uniform
    declared = {i.name for i in model.graph.input}
    for n in inputs:
        if n not in declared:
            model.graph.input.append(_input(n, schema))
    return model  # type: ignore[no-any-return]


def _input(name: str, schema: TabularSchema) -> onnx.ValueInfoProto:
    dtype = TensorProto.FLOAT if schema.kind_of(name) == "numeric" else TensorProto.STRING
    return helper.make_tensor_value_info(name, dtype, [None, 1])


def _const(name: str, values: Any, dtype: Any = np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


def _model_inputs(model: TabularModel, schema: TabularSchema) -> list[str]:
    """Graph inputs the scikit-learn part reads (the sensitive column only if it is a feature)."""
    return [n for n in schema.graph_inputs if not (n == model.sensitive_feature and model.method ==
                                                   "threshold_optimizer" and _is_extra(n, schema))]


def _is_extra(name: str, schema: TabularSchema) -> bool:
    return any(c.name == name and c.role == "sensitive" for c in schema.columns) and \
        not any(c.name == name and c.role == "feature" for c in schema.columns)


def build_graph(model: TabularModel, schema: TabularSchema) -> onnx.ModelProto:
    """One ONNX graph for ``model`` with output ``probabilities`` [N, 2].

    Raises:
        ExportError: a part cannot be converted.
    """
    feats = _model_inputs(model, schema)
    if model.method in ("none", "reweighing"):
        base = _convert_pipeline(model.pipeline, schema, feats)
        return _finish(base, [], [], "probabilities", schema)
    if model.method == "exponentiated_gradient":
        return _mixture_graph(model, schema, feats)
    if model.method == "threshold_optimizer":
        return _threshold_graph(model, schema, feats)
    raise ExportError(f"mitigation {model.method!r} cannot be exported to ONNX; choose none, reweighing, "
                      "exponentiated_gradient or threshold_optimizer.")


def _prefixed(pipe: Any, schema: TabularSchema, feats: list[str], prefix: str) -> onnx.GraphProto:
    m = _convert_pipeline(pipe, schema, feats)
    m = onnx.compose.add_prefix(m, prefix, rename_inputs=False)
    return m.graph


def _finish(base: onnx.ModelProto, nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], output: str,
            schema: TabularSchema) -> onnx.ModelProto:
    """Rebuild ``base``'s graph with extra nodes and one ``probabilities`` output, inputs in schema order."""
    g = base.graph
    extra_inputs = {i.name: i for i in g.input}
    inputs = [extra_inputs.get(n) or _input(n, schema) for n in schema.graph_inputs]
    final_nodes = list(g.node) + nodes
    if output != "probabilities":
        final_nodes.append(helper.make_node("Identity", [output], ["probabilities"]))
    graph = helper.make_graph(final_nodes, "aiforge_tabular", inputs,
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2])],
                              initializer=list(g.initializer) + inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in OPSET.items()])
    model.ir_version = base.ir_version
    onnx.checker.check_model(model)
    return model


def _from_nodes(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], p1: str,
                schema: TabularSchema) -> onnx.ModelProto:
    """A graph built node by node whose positive-class probability is ``p1``, finished like the others."""
    more, more_inits, out = _two_columns(p1, "final_")
    empty = helper.make_model(helper.make_graph([], "empty", [], []),
                              opset_imports=[helper.make_opsetid(d, v) for d, v in OPSET.items()])
    return _finish(empty, nodes + more, inits + more_inits, out, schema)


def _two_columns(p1: str, prefix: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], str]:
    """[1 - p1, p1] from a [N] or [N, 1] float tensor."""
    nodes = [
        helper.make_node("Reshape", [p1, f"{prefix}shape"], [f"{prefix}p1"]),
        helper.make_node("Sub", [f"{prefix}one", f"{prefix}p1"], [f"{prefix}p0"]),
        helper.make_node("Concat", [f"{prefix}p0", f"{prefix}p1"], [f"{prefix}probs"], axis=1),
    ]
    inits = [_const(f"{prefix}shape", [-1, 1], np.int64), _const(f"{prefix}one", 1.0)]
    return nodes, inits, f"{prefix}probs"


def _mixture_graph(model: TabularModel, schema: TabularSchema, feats: list[str]) -> onnx.ModelProto:
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    terms = []
    for i, (pipe, w) in enumerate(zip(model.members, model.weights, strict=True)):
        g = _prefixed(pipe, schema, feats, f"m{i}_")
        nodes += list(g.node)
        inits += list(g.initializer)
        label = f"m{i}_label"
        nodes += [helper.make_node("Cast", [label], [f"m{i}_labelf"], to=TensorProto.FLOAT),
                  helper.make_node("Mul", [f"m{i}_labelf", f"m{i}_w"], [f"m{i}_term"])]
        inits.append(_const(f"m{i}_w", w))
        terms.append(f"m{i}_term")
    nodes.append(helper.make_node("Sum", terms, ["mix_p1_raw"]))
    nodes.append(helper.make_node("Clip", ["mix_p1_raw", "mix_zero", "mix_one"], ["mix_p1"]))
    inits += [_const("mix_zero", 0.0), _const("mix_one", 1.0)]
    return _from_nodes(nodes, inits, "mix_p1", schema)


def _threshold_graph(model: TabularModel, schema: TabularSchema, feats: list[str]) -> onnx.ModelProto:
    assert model.sensitive_feature is not None
    g = _prefixed(model.pipeline, schema, feats, "base_")
    groups = sorted(model.thresholds)
    table = {k: [model.thresholds[gr][k] for gr in groups]
             for k in ("p0", "op0", "t0", "p1", "op1", "t1", "p_ignore", "constant")}
    nodes = list(g.node)
    inits = list(g.initializer) + [_const(f"tab_{k}", v) for k, v in table.items()]
    inits += [_const("to_col1", [1], np.int64), _const("to_flat", [-1], np.int64), _const("to_one", 1.0)]
    nodes += [
        helper.make_node("Gather", ["base_probabilities", "to_col1"], ["to_score2"], axis=1),
        helper.make_node("Reshape", ["to_score2", "to_flat"], ["to_score"]),
        helper.make_node("Reshape", [model.sensitive_feature, "to_flat"], ["to_group_str"]),
        helper.make_node("LabelEncoder", ["to_group_str"], ["to_group"], domain="ai.onnx.ml",
                         keys_strings=groups, values_int64s=list(range(len(groups))), default_int64=0),
    ]
    for k in table:
        nodes.append(helper.make_node("Gather", [f"tab_{k}", "to_group"], [f"to_g_{k}"], axis=0))
    for j in ("0", "1"):
        # op = +1: score > t; op = -1: score < t  ->  chosen = gt*(op+1)/2 + lt*(1-op)/2
        nodes += [
            helper.make_node("Greater", ["to_score", f"to_g_t{j}"], [f"to_gt{j}b"]),
            helper.make_node("Less", ["to_score", f"to_g_t{j}"], [f"to_lt{j}b"]),
            helper.make_node("Cast", [f"to_gt{j}b"], [f"to_gt{j}"], to=TensorProto.FLOAT),
            helper.make_node("Cast", [f"to_lt{j}b"], [f"to_lt{j}"], to=TensorProto.FLOAT),
            helper.make_node("Add", ["to_one", f"to_g_op{j}"], [f"to_a{j}"]),
            helper.make_node("Sub", ["to_one", f"to_g_op{j}"], [f"to_b{j}"]),
            helper.make_node("Mul", [f"to_gt{j}", f"to_a{j}"], [f"to_ga{j}"]),
            helper.make_node("Mul", [f"to_lt{j}", f"to_b{j}"], [f"to_lb{j}"]),
            helper.make_node("Add", [f"to_ga{j}", f"to_lb{j}"], [f"to_twice{j}"]),
            helper.make_node("Mul", [f"to_twice{j}", "to_half"], [f"to_sel{j}"]),
            helper.make_node("Mul", [f"to_sel{j}", f"to_g_p{j}"], [f"to_term{j}"]),
        ]
    inits.append(_const("to_half", 0.5))
    nodes += [
        helper.make_node("Add", ["to_term0", "to_term1"], ["to_interp"]),
        helper.make_node("Mul", ["to_g_p_ignore", "to_g_constant"], ["to_ign"]),
        helper.make_node("Sub", ["to_one", "to_g_p_ignore"], ["to_keep"]),
        helper.make_node("Mul", ["to_keep", "to_interp"], ["to_kept"]),
        helper.make_node("Add", ["to_ign", "to_kept"], ["to_p1"]),
    ]
    return _from_nodes(nodes, inits, "to_p1", schema)


def onnx_proba(path: Path, feed: dict[str, np.ndarray]) -> np.ndarray:
    """Positive-class probability from a tabular graph (used by the parity check)."""

    session = onnx_session(path, threads=None)
    return np.asarray(session.run(["probabilities"], feed)[0][:, 1], dtype=np.float64)


def export_tabular(model: TabularModel, schema: TabularSchema, directory: Path, *, feed: dict[str, np.ndarray],
                   reference: np.ndarray, min_agreement: float = 0.999,
                   max_prob_diff: float = 1e-4) -> Parity:
    """Write ``model.onnx`` into ``directory`` and check it against scikit-learn on ``feed``.

    ``reference`` is scikit-learn's positive-class probability for the same rows. Smooth models
    (plain, reweighed) must match within ``max_prob_diff``; thresholded ones (the mitigations with
    hard decisions) may differ only where a float32 score sits on a threshold, so their labels
    must agree on at least ``min_agreement`` of the rows.

    Raises:
        ExportError: conversion failed or parity did not hold.
    """
    graph = build_graph(model, schema)
    path = directory / "model.onnx"
    onnx.save(graph, str(path))
    p = onnx_proba(path, feed)
    diff = np.abs(p - reference)
    agreement = float(np.mean((p > 0.5) == (reference > 0.5))) if len(p) else 1.0
    max_diff = float(diff.max()) if len(p) else 0.0
    smooth = model.method in ("none", "reweighing")
    if (smooth and max_diff > max_prob_diff) or agreement < min_agreement:
        raise ExportError(
            f"ONNX export of the {model.method} {model.kind} model does not match scikit-learn: max |Δp| = "
            f"{max_diff:.2e} (limit {max_prob_diff:.0e}), label agreement {agreement:.4%} "
            f"(limit {min_agreement:.2%}). Not shipping a model that differs from the audited one.")
    return Parity(samples=len(p), max_abs_diff=max_diff, diff_key="max_abs_prob_diff",
                  details={"label_agreement": agreement, "max_prob_diff_limit": max_prob_diff,
                           "min_agreement": min_agreement})

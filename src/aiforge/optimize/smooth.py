"""SmoothQuant (Xiao et al. 2023) on the FFN down-projections: static per-input-channel factors that move the
activation outliers into the weights, so a per-row int8 activation scale loses less.

For a MatMul ``y = x @ W`` (``W`` of shape ``[K, N]``) and calibration activations ``x``, each input channel
``j`` gets ``s_j = max|x_j|^alpha / max|W_j|^(1 - alpha)``; the graph then computes
``y = (x / s) @ (diag(s) W)``: the same product in exact arithmetic, with the activation's wide channels
narrowed before it is quantized. ``x / s`` is one ``Mul`` by the constant ``1 / s`` (the op before a
down-projection, ``BiasGelu``, cannot absorb it); ``diag(s) W`` is folded into the weight before it is
quantized. The factors are constants fitted once on calibration texts, so an item's output still depends
on that item alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Smoothed", "down_projections", "smooth_matmuls"]


_FLOOR = 1e-5  # a channel calibration never saw active keeps a tiny factor instead of a 0 (1/s must exist)


@dataclass(frozen=True)
class Smoothed:
    """What :func:`smooth_matmuls` changed."""

    matmuls: int
    alpha: float
    calibration_rows: int  # real (unpadded) tokens the activation maxima were read over


def down_projections(model: Any) -> list[Any]:
    """The MatMul nodes of ``model`` (an ``onnx.ModelProto``) whose constant weight narrows (``K > N``): a
    transformer's FFN down-projections."""
    weights = {i.name: tuple(i.dims) for i in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type == "MatMul" and len(weights.get(n.input[1], ())) == 2
            and weights[n.input[1]][0] > weights[n.input[1]][1]]


def _activation_maxima(model: Any, names: list[str], feeds: Iterable[Mapping[str, np.ndarray]],
                       mask_input: str) -> tuple[dict[str, np.ndarray], int]:
    """Per-channel max |activation| of each tensor in ``names`` over the real tokens of ``feeds``."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    maxima: dict[str, np.ndarray] = {}
    rows = 0
    for feed in feeds:
        real = np.asarray(feed[mask_input]).reshape(-1) > 0
        rows += int(real.sum())
        for name, value in zip(names, session.run(names, dict(feed)), strict=True):
            top = np.abs(value.reshape(-1, value.shape[-1])[real]).max(axis=0)
            maxima[name] = np.maximum(maxima[name], top) if name in maxima else top
    return maxima, rows


def smooth_matmuls(path: Path, out: Path, *, calibration: Iterable[Mapping[str, np.ndarray]], alpha: float,
                   mask_input: str = "attention_mask") -> Smoothed:
    """Write ``out``: the fp32 graph at ``path`` with every down-projection (:func:`down_projections`) smoothed
    by factors fitted on ``calibration`` (the graph's feeds, e.g. batches of training texts) with ``alpha``."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    targets = down_projections(model)
    names = list(dict.fromkeys(n.input[0] for n in targets))
    maxima, rows = _activation_maxima(model, names, calibration, mask_input)
    inits = {i.name: i for i in graph.initializer}
    added: dict[str, list[Any]] = {}
    for node in targets:
        x, w_name = node.input[0], node.input[1]
        w = numpy_helper.to_array(inits[w_name]).astype(np.float32)
        s = np.maximum(maxima[x], _FLOOR) ** alpha / np.maximum(np.abs(w).max(axis=1), _FLOOR) ** (1 - alpha)
        s = np.maximum(s, _FLOOR).astype(np.float32)
        inits[w_name].CopyFrom(numpy_helper.from_array((w * s[:, None]).astype(np.float32), w_name))
        inv = f"{node.name}_smooth_inv"
        graph.initializer.append(numpy_helper.from_array((1.0 / s).astype(np.float32), inv))
        added[node.name] = [helper.make_node("Mul", [x, inv], [f"{node.name}_smoothed"], name=f"{node.name}_smooth")]
        node.input[0] = f"{node.name}_smoothed"
    nodes: list[Any] = []
    for node in graph.node:
        nodes += added.get(node.name, [])
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(model, str(out))
    return Smoothed(matmuls=len(targets), alpha=alpha, calibration_rows=rows)

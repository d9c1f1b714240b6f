"""Per-row activation scales for a dynamically quantized graph, so no item depends on its batch-mates.

onnxruntime's ``quantize_dynamic`` inserts ``DynamicQuantizeLinear`` before every int8 MatMul: one
scale and zero point computed over the *whole* activation tensor (every text of the batch, padding
included). A text's probabilities then change with what it is batched with (0.066 in probability on
BANKING77). This rewrite replaces each ``DynamicQuantizeLinear`` by a symmetric per-row quantizer:
for every row ``x`` of the last axis (one token of one text), ``s = max|x| / 127`` and
``q = round(x / s) + 128`` as uint8 with the fixed zero point 128. ``MatMulInteger`` then computes
``(q - 128) @ (w - zw)`` exactly in integers, and the result is rescaled by the weight scale, then by
the ``[..., 1]`` row scale, so every row's result depends on that row alone.

The rescale is rewired from ``y * (s_a * s_w)`` to ``(y * s_w) * s_a``: onnxruntime's
MatMulIntegerToFloat fusion matches the first form and assumes a scalar ``s_a`` (with a row
scale it silently computes wrong results at ORT_ENABLE_EXTENDED and above).

``compact=True`` (the default) writes the same arithmetic in fewer, vectorized ops: the same row
scale ``s``, then ``q = QuantizeLinear(x / s, 1, 128)`` (one op rounds half to even, shifts, saturates
and casts, as Round, Add and Cast did: the same codes); per MatMul one
``com.microsoft.MatMulIntegerToFloat(q, w, 1, s_w, 128, z_w)``, whose activation scale is the scalar 1
that fusion assumes, then one ``Mul`` by ``s``. Six ops per quantizer instead of nine, two per MatMul
instead of four.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PerRowRewrite", "per_row_activations"]


_EPS = 1e-12  # an all-zero row gets a tiny scale (its codes are all 128, i.e. zero) instead of a 0/0


@dataclass(frozen=True)
class PerRowRewrite:
    """What :func:`per_row_activations` changed."""

    quantizers: int  # DynamicQuantizeLinear nodes replaced
    left: int  # DynamicQuantizeLinear nodes left (feeding an op other than MatMulInteger)
    matmuls: int = 0  # compact: MatMulInteger -> Cast -> Mul chains made one MatMulIntegerToFloat


def per_row_activations(path: Path, out: Path | None = None, *, compact: bool = True) -> PerRowRewrite:
    """Rewrite the graph at ``path`` (in place unless ``out``) to per-row activation scales.

    Only quantizers whose outputs feed ``MatMulInteger`` (and the scale ``Mul``) are rewritten: those
    are the ones whose zero point may be a fixed scalar and whose scale may be a row vector.
    ``compact=False`` writes the older plain-op form (Abs ... Cast, then Cast, Mul, Mul).
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    graph.initializer.extend([
        numpy_helper.from_array(np.array(127.0, dtype=np.float32), "aiforge_per_row_127"),
        numpy_helper.from_array(np.array(128.0, dtype=np.float32), "aiforge_per_row_128f"),
        numpy_helper.from_array(np.array(_EPS, dtype=np.float32), "aiforge_per_row_eps"),
        numpy_helper.from_array(np.array(128, dtype=np.uint8), "aiforge_per_row_zp"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "aiforge_per_row_one"),
    ])
    if opset >= 18:
        graph.initializer.append(numpy_helper.from_array(np.array([-1], dtype=np.int64), "aiforge_per_row_axes"))
    nodes: list[onnx.NodeProto] = []
    replaced = left = 0
    stale: set[str] = set()
    row_scales: set[str] = set()  # compact: the row scales
    spares: set[int] = set()  # compact: the old zero point, kept only for a chain left unfused
    for node in graph.node:
        if node.op_type != "DynamicQuantizeLinear":
            nodes.append(node)
            continue
        x, (q, scale, zp) = node.input[0], node.output
        users = {n.op_type for n in consumers.get(q, [])} | {n.op_type for n in consumers.get(zp, [])}
        if users - {"MatMulInteger"}:
            nodes.append(node)
            left += 1
            continue
        p = f"{node.name or q}_per_row"
        reduce = (helper.make_node("ReduceMax", [f"{p}_abs", "aiforge_per_row_axes"], [f"{p}_max"], keepdims=1)
                  if opset >= 18 else
                  helper.make_node("ReduceMax", [f"{p}_abs"], [f"{p}_max"], axes=[-1], keepdims=1))
        stale.update(node.output)
        replaced += 1
        nodes += [
            helper.make_node("Abs", [x], [f"{p}_abs"]),
            reduce,
            helper.make_node("Max", [f"{p}_max", "aiforge_per_row_eps"], [f"{p}_maxeps"]),
            helper.make_node("Div", [f"{p}_maxeps", "aiforge_per_row_127"], [scale]),
            helper.make_node("Div", [x, scale], [f"{p}_scaled"]),
        ]
        if compact:  # QuantizeLinear (scale 1, zero point 128) rounds, shifts, saturates and casts
            nodes.append(helper.make_node("QuantizeLinear", [f"{p}_scaled", "aiforge_per_row_one",
                                                             "aiforge_per_row_zp"], [q]))
            row_scales.add(scale)
            zero = helper.make_node("Identity", ["aiforge_per_row_zp"], [zp])
            nodes.append(zero)
            spares.add(id(zero))
            continue
        nodes += [
            helper.make_node("Round", [f"{p}_scaled"], [f"{p}_round"]),
            helper.make_node("Add", [f"{p}_round", "aiforge_per_row_128f"], [f"{p}_shift"]),
            helper.make_node("Cast", [f"{p}_shift"], [q], to=onnx.TensorProto.UINT8),
            helper.make_node("Identity", ["aiforge_per_row_zp"], [zp]),
        ]
    matmuls = 0
    if compact:
        nodes, matmuls = _integer_to_float(nodes, row_scales, {o.name for o in graph.output})
        read = {i for n in nodes for i in n.input}
        nodes = [n for n in nodes if id(n) not in spares or n.output[0] in read]
    nodes = _rescale_weight_first(nodes, stale)
    del graph.node[:]
    graph.node.extend(nodes)
    read = {i for n in nodes for i in n.input}
    unused = [i for i in graph.initializer if i.name.startswith("aiforge_per_row_") and i.name not in read]
    for init in unused:  # constants only the other form uses
        graph.initializer.remove(init)
    # shape annotations of the old quantizer outputs (a scalar scale) would now be wrong
    kept = [v for v in graph.value_info if v.name not in stale]
    del graph.value_info[:]
    graph.value_info.extend(kept)
    onnx.save(model, str(out or path))
    return PerRowRewrite(quantizers=replaced, left=left, matmuls=matmuls)


def _integer_to_float(nodes: list[Any], row_scales: set[str], outputs: set[str]) -> tuple[list[Any], int]:
    """``Mul(Cast(MatMulInteger(q, w, zp, zw)), Mul(s, s_w))`` -> ``Mul(MatMulIntegerToFloat(q, w, 1, s_w, 128,
    zw), s)`` for each row scale ``s`` in ``row_scales``: the op's own activation scale is the scalar 1. A chain
    with an intermediate among the graph's ``outputs`` or read by another node is left as it is."""
    from onnx import helper

    users: dict[str, list[Any]] = {}
    for n in nodes:
        for name in n.input:
            users.setdefault(name, []).append(n)
    producer = {o: n for n in nodes for o in n.output}
    drop: set[int] = set()
    swap: dict[int, list[Any]] = {}
    for n in nodes:
        if n.op_type != "MatMulInteger":
            continue
        casts = users.get(n.output[0], [])
        if len(casts) != 1 or casts[0].op_type != "Cast" or {n.output[0], casts[0].output[0]} & outputs:
            continue
        muls = users.get(casts[0].output[0], [])
        if len(muls) != 1 or muls[0].op_type != "Mul":
            continue
        mul = muls[0]
        product_name = mul.input[1] if mul.input[0] == casts[0].output[0] else mul.input[0]
        product = producer.get(product_name)
        if product is None or product.op_type != "Mul" or product.input[0] not in row_scales:
            continue
        row, weight_scale = product.input
        a, w = n.input[0], n.input[1]
        zw = n.input[3] if len(n.input) > 3 else ""
        unscaled = f"{mul.output[0]}_unscaled"
        swap[id(n)] = [
            helper.make_node("MatMulIntegerToFloat", [a, w, "aiforge_per_row_one", weight_scale,
                                                      "aiforge_per_row_zp", zw], [unscaled], domain="com.microsoft",
                             name=f"{n.name}_to_float"),
            helper.make_node("Mul", [unscaled, row], list(mul.output), name=mul.name or f"{n.name}_row_scale"),
        ]
        drop.update({id(casts[0]), id(mul)})
    out: list[Any] = []
    for n in nodes:
        if id(n) in swap:
            out += swap[id(n)]
        elif id(n) not in drop:
            out.append(n)
    # a product of scales nothing reads any more goes (one another node still reads keeps its Mul)
    read = {i for n in out for i in n.input}
    out = [n for n in out if not (n.op_type == "Mul" and n.input[0] in row_scales and n.output[0] not in read)]
    return out, len(swap)


def _rescale_weight_first(nodes: list[Any], quantized: set[str]) -> list[Any]:
    """``y * Mul(s_a, s_w)`` -> ``Mul(y, s_w) * s_a`` for every row scale ``s_a`` in ``quantized``."""
    from onnx import helper

    products = {n.output[0]: n for n in nodes if n.op_type == "Mul" and n.input[0] in quantized}
    for n in nodes:  # a product something other than a Mul reads stays as it is
        for name in n.input:
            if name in products and n.op_type != "Mul":
                del products[name]
    out = []
    for n in nodes:
        if n.op_type == "Mul" and n.output[0] in products:
            continue  # the product of scales: folded into its user below
        scale = next((i for i in n.input if i in products), None) if n.op_type == "Mul" else None
        if scale is None:
            out.append(n)
            continue
        row, weight = products[scale].input
        y = n.input[1] if n.input[0] == scale else n.input[0]
        out += [helper.make_node("Mul", [y, weight], [f"{n.output[0]}_weight_scaled"], name=f"{n.name}_weight"),
                helper.make_node("Mul", [f"{n.output[0]}_weight_scaled", row], list(n.output), name=n.name)]
    return out

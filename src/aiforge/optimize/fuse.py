"""Fused transformer graph: one attention op per layer, LayerNorm with its residual and bias, GELU with its bias.

onnxruntime's transformer optimizer (``onnxruntime.transformers.optimizer.optimize_model``) fuses the
attention of the graphs the TorchScript exporter writes; the dynamo exporter writes PyTorch's
``scaled_dot_product_attention`` with a boolean mask (``Where``, ``Softmax``, ``IsNaN``), which its
pattern matcher does not recognise, and its symbolic shape inference fails on the graph, so it skips
the SkipLayerNormalization fusion too (only ``BiasGelu`` applies). This module fuses the three patterns of
a BERT-style encoder directly, on the fp32 graph and before quantization (the quantizer then sees the
same weight MatMuls as before):

* ``MatMul(softmax(mask(Q K^T * s)), V)`` with its reshapes and transposes -> ``com.microsoft``
  ``MultiHeadAttention(Q, K, V, key_padding_mask)``: the mask is the ``attention_mask`` input, so a
  padded key never reaches a real token (padded *query* rows are computed and the pooling drops them).
* ``LayerNormalization(Add(Add(MatMul, bias), residual))`` -> ``SkipLayerNormalization`` (bias included).
* ``Gelu(Add(MatMul, bias))`` -> ``BiasGelu``.

Each item's result still depends on that item alone (``tests/engine/test_batch_independence.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiforge.errors import AiforgeError
from aiforge.hub.catalog import get_backbone

__all__ = ["FusedGraph", "backbone_heads", "fuse_transformer"]


@dataclass(frozen=True)
class FusedGraph:
    """What :func:`fuse_transformer` fused."""

    attention: int
    skip_layer_norm: int
    bias_gelu: int
    nodes_before: int
    nodes_after: int

    def to_dict(self) -> dict[str, int]:
        """JSON form (recorded in the parity details)."""
        return {"attention": self.attention, "skip_layer_norm": self.skip_layer_norm, "bias_gelu": self.bias_gelu,
                "nodes_before": self.nodes_before, "nodes_after": self.nodes_after}


def backbone_heads(name: str) -> int | None:
    """``num_attention_heads`` of an installed backbone's ``config.json``; None when unknown."""
    try:
        config = json.loads((get_backbone(name).path() / "config.json").read_text(encoding="utf-8"))
    except (AiforgeError, OSError, ValueError):
        return None
    heads = config.get("num_attention_heads")
    return int(heads) if isinstance(heads, int) else None


class _Graph:
    """Producer and consumer look-ups over a graph's nodes."""

    def __init__(self, graph: Any) -> None:
        self.graph = graph
        self.init = {i.name: i for i in graph.initializer}
        self.producer = {o: n for n in graph.node for o in n.output}
        self.consumers: dict[str, list[Any]] = {}
        for n in graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)

    def up(self, name: str, op: str) -> Any | None:
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op else None

    def bias_add(self, name: str) -> tuple[str, str] | None:
        """``name`` = Add(MatMul(x, W), b) with initializer W and b: (MatMul output, b)."""
        add = self.up(name, "Add")
        if add is None:
            return None
        for a, b in ((add.input[0], add.input[1]), (add.input[1], add.input[0])):
            if b in self.init and self.up(a, "MatMul") is not None and len(self.init[b].dims) == 1:
                return a, b
        return None

    def only_user(self, name: str) -> bool:
        return len(self.consumers.get(name, [])) == 1 and name not in {o.name for o in self.graph.output}


def _head_input(g: _Graph, name: str) -> str | None:
    """Follow ``Mul(scale)``/``Transpose``/``Reshape`` up from one attention operand to the projection."""
    for _ in range(8):
        node = g.producer.get(name)
        if node is None:
            return None
        if node.op_type == "Add" and g.bias_add(name) is not None:
            return name
        if node.op_type not in ("Mul", "Transpose", "Reshape"):
            return None
        name = node.input[0]
    return None


def _fuse_attention(g: _Graph, heads: int, mask: str, new: list[Any], drop: set[str]) -> int:
    from onnx import helper

    count = 0
    for node in list(g.graph.node):
        if node.op_type != "MatMul" or node.input[1] in g.init:
            continue
        probs = node.input[0]
        where = g.up(probs, "Where")
        softmax = g.up(where.input[2], "Softmax") if where is not None else g.up(probs, "Softmax")
        if softmax is None:
            continue
        scores_add = g.up(softmax.input[0], "Add")
        scores = g.up(scores_add.input[0], "MatMul") if scores_add is not None else None
        if scores is None:
            continue
        q, k, v = (_head_input(g, scores.input[0]), _head_input(g, scores.input[1]), _head_input(g, node.input[1]))
        transpose = g.consumers.get(node.output[0], [])
        reshape = g.consumers.get(transpose[0].output[0], []) if len(transpose) == 1 else []
        if q is None or k is None or v is None or len(transpose) != 1 or transpose[0].op_type != "Transpose" or \
                len(reshape) != 1 or reshape[0].op_type != "Reshape":
            continue
        out = reshape[0].output[0]
        drop.add(reshape[0].name)
        new.append(helper.make_node("MultiHeadAttention", [q, k, v, "", mask], [out], domain="com.microsoft",
                                    num_heads=heads, name=f"aiforge_attention_{count}"))
        count += 1
    return count


def _fuse_skip_layer_norm(g: _Graph, new: list[Any], drop: set[str]) -> int:
    from onnx import helper

    count = 0
    for node in g.graph.node:
        if node.op_type != "LayerNormalization" or len(node.input) < 3:
            continue
        add = g.up(node.input[0], "Add")
        if add is None or not g.only_user(add.output[0]):
            continue
        pairs = [(a, r) for a, r in ((add.input[0], add.input[1]), (add.input[1], add.input[0]))
                 if g.bias_add(a) is not None and g.only_user(a)]
        if not pairs:
            continue
        a, residual = pairs[0]
        found = g.bias_add(a)
        assert found is not None
        matmul_out, bias = found
        drop.update({node.name, add.name, g.producer[a].name})
        eps = next((at.f for at in node.attribute if at.name == "epsilon"), 1e-5)
        new.append(helper.make_node("SkipLayerNormalization", [matmul_out, residual, node.input[1], node.input[2],
                                                               bias], [node.output[0]], domain="com.microsoft",
                                    epsilon=eps, name=f"aiforge_skip_layer_norm_{count}"))
        count += 1
    return count


def _fuse_bias_gelu(g: _Graph, new: list[Any], drop: set[str]) -> int:
    from onnx import helper

    count = 0
    for node in g.graph.node:
        if node.op_type != "Gelu" or any(at.name == "approximate" and at.s == b"tanh" for at in node.attribute):
            continue
        found = g.bias_add(node.input[0])
        if found is None or not g.only_user(node.input[0]):
            continue
        drop.update({node.name, g.producer[node.input[0]].name})
        new.append(helper.make_node("BiasGelu", list(found), [node.output[0]], domain="com.microsoft",
                                    name=f"aiforge_bias_gelu_{count}"))
        count += 1
    return count


def _prune(graph: Any) -> None:
    """Drop nodes and initializers no graph output depends on."""
    needed = {o.name for o in graph.output}
    kept = []
    for node in reversed(list(graph.node)):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    kept.reverse()
    del graph.node[:]
    graph.node.extend(kept)
    inits = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)


def _toposort(graph: Any) -> None:
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        rest = []
        for node in pending:
            if all(i in available for i in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            missing = sorted({i for n in rest for i in n.input} - available - {o for n in rest for o in n.output})
            raise ValueError(f"graph has a cycle or a missing input near {rest[0].name}: {missing[:5]}")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


def fuse_transformer(path: Path, out: Path, *, num_heads: int, mask_input: str = "attention_mask") -> FusedGraph:
    """Write ``out``: the encoder graph at ``path`` with attention, SkipLayerNorm and BiasGelu fused.

    ``num_heads`` is the encoder's attention heads (12 for MiniLM-L6); ``mask_input`` the graph input
    holding the 0/1 padding mask.
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    graph = model.graph
    before = len(graph.node)
    for i, node in enumerate(graph.node):  # fusions drop nodes by name
        if not node.name:
            node.name = f"aiforge_node_{i}"
    mask32 = "aiforge_attention_mask_int32"
    new: list[Any] = [helper.make_node("Cast", [mask_input], [mask32], to=TensorProto.INT32,
                                       name="aiforge_attention_mask_cast")]
    drop: set[str] = set()
    g = _Graph(graph)
    attention = _fuse_attention(g, num_heads, mask32, new, drop)
    nodes = [n for n in graph.node if n.name not in drop] + new
    del graph.node[:]
    graph.node.extend(nodes)
    fused: list[Any] = []
    drop = set()
    g = _Graph(graph)
    skip = _fuse_skip_layer_norm(g, fused, drop)
    gelu = _fuse_bias_gelu(g, fused, drop)
    nodes = [n for n in graph.node if n.name not in drop] + fused
    del graph.node[:]
    graph.node.extend(nodes)
    _toposort(graph)
    _prune(graph)
    del graph.value_info[:]  # shapes of removed intermediates; onnxruntime infers what it needs
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(out))
    return FusedGraph(attention=attention, skip_layer_norm=skip, bias_gelu=gelu, nodes_before=before,
                      nodes_after=len(graph.node))

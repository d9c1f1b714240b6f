"""Weight-only block quantization of MatMuls (onnxruntime's ``MatMulNBits``), shared by the text and chat kinds.

Each constant weight matrix is stored as ``bits``-bit integers in blocks of ``block_size`` along K, one scale per
block. With ``accuracy_level=4`` onnxruntime's CPU kernel quantizes the *activations* to int8 too, per row and per
block of K, inside the op, and multiplies in integers (VNNI where the CPU has it): one fused op instead of a
quantizer, an integer MatMul and a rescale. The activation scales are per row, so a row's result does not depend
on the other rows of the batch, but only where the kernel takes that path for every batch size: with blocks of
128 on MiniLM's down-projections a text's output moved by 3e-3 with its batch-mates (``bench/optimize.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

__all__ = ["weight_only_matmuls"]


def weight_only_matmuls(model: Any, *, bits: int, block_size: int, accuracy_level: int = 4,
                        nodes: Sequence[str] | None = None) -> Any:
    """``model`` (an ``onnx.ModelProto``) with its constant-weight MatMuls (only ``nodes``, if given) as
    ``MatMulNBits``, symmetric, topologically sorted: a new ``onnx.ModelProto`` to save."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    log = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    level = log.level
    log.setLevel(logging.WARNING)  # one INFO line per node of the graph
    try:
        # onnxruntime's nodes_to_include adds to op_types_to_quantize instead of narrowing it: exclude the rest
        keep = None if nodes is None else set(nodes)
        excluded = [] if keep is None else [n.name for n in model.graph.node
                                            if n.op_type == "MatMul" and n.name not in keep]
        quantizer = MatMulNBitsQuantizer(model, bits=bits, block_size=block_size, is_symmetric=True,
                                         accuracy_level=accuracy_level, op_types_to_quantize=("MatMul",),
                                         nodes_to_exclude=excluded)
        quantizer.process()
        quantizer.model.topological_sort()
    finally:
        log.setLevel(level)
    return quantizer.model.model

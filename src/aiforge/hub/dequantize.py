"""PyTorch weights for a BERT encoder that ships only as a dynamically quantized int8 ONNX graph (bge-small).

The graph (onnxruntime ``quantize_dynamic``) keeps LayerNorm weights and biases as float32 initializers
under their PyTorch names, the three embedding tables as uint8 with one scale and zero point per table
(``Gather`` then ``DequantizeLinear``), and every linear layer's weight as an int8 ``[in, out]`` matrix with
one scale and zero point per output column, the ``B`` input of a ``MatMulInteger`` node named after the
layer (``/encoder/layer.0/attention/self/query/MatMul_quant``). Each is dequantized as
``(q - zero_point) * scale`` and, for linear layers, transposed to PyTorch's ``[out, in]``. Read from
protobuf tensors only: nothing is unpickled and nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from aiforge.errors import BackboneError

__all__ = ["bert_from_int8_onnx", "dequantized_state_dict"]


_QUANT = "_quantized"


def dequantized_state_dict(graph: Path) -> dict[str, np.ndarray]:
    """Float32 arrays under ``transformers`` ``BertModel`` names, dequantized from the int8 graph ``graph``.

    Raises:
        BackboneError: the graph is not a dynamically quantized BERT (an op or initializer is missing).
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(graph))
    init = {t.name: t for t in model.graph.initializer}

    def array(name: str) -> np.ndarray:
        if name not in init:
            raise BackboneError(f"{graph}: initializer {name!r} not found; expected a dynamically quantized "
                                "BERT graph (onnxruntime quantize_dynamic).")
        return np.asarray(numpy_helper.to_array(init[name]))

    def dequant(base: str) -> np.ndarray:
        q = array(base + _QUANT).astype(np.float32)
        return np.asarray((q - array(base + "_zero_point").astype(np.float32)) * array(base + "_scale"),
                          dtype=np.float32)

    out: dict[str, np.ndarray] = {}
    for name, tensor in init.items():  # LayerNorm weights and biases stay float32 under their own names
        if tensor.data_type == onnx.TensorProto.FLOAT and name.endswith((".weight", ".bias")):
            out[name] = np.asarray(numpy_helper.to_array(tensor), dtype=np.float32)
    for table in ("word", "position", "token_type"):
        out[f"embeddings.{table}_embeddings.weight"] = dequant(f"embeddings.{table}_embeddings.weight")
    for node in model.graph.node:
        if node.op_type != "MatMulInteger":
            continue
        if not node.name.endswith("/MatMul_quant") or not node.input[1].endswith(_QUANT):
            raise BackboneError(f"{graph}: MatMulInteger node {node.name!r} does not name its layer "
                                "(.../MatMul_quant over a ..._quantized weight).")
        layer = node.name.strip("/").removesuffix("/MatMul_quant").replace("/", ".")
        out[f"{layer}.weight"] = np.ascontiguousarray(dequant(node.input[1].removesuffix(_QUANT)).T)
    return out


def bert_from_int8_onnx(folder: Path) -> Any:
    """A ``transformers`` ``BertModel`` (no pooler) from ``folder``'s ``config.json`` and int8 ``model.onnx``.

    Raises:
        BackboneError: a weight is missing, extra or of the wrong shape for the config.
    """
    import torch
    from transformers import BertConfig, BertModel

    config = BertConfig.from_json_file(str(folder / "config.json"))
    model = BertModel(config, add_pooling_layer=False)
    weights = {k: torch.from_numpy(np.array(v)) for k, v in dequantized_state_dict(folder / "model.onnx").items()}
    expected = {k: v.shape for k, v in model.state_dict().items() if not k.endswith("position_ids")
                and not k.endswith("token_type_ids")}
    got = {k: v.shape for k, v in weights.items()}
    if got != expected:
        missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
        wrong = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
        raise BackboneError(f"{folder / 'model.onnx'}: dequantized weights do not fit {folder / 'config.json'}: "
                            f"missing {missing[:5]}, unexpected {extra[:5]}, wrong shape {wrong[:5]}.")
    model.load_state_dict(weights, strict=False)
    model.eval()  # type: ignore[no-untyped-call]
    return model

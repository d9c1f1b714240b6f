"""The compact per-row quantizer and the SmoothQuant rewrite on small real ONNX graphs.

The compact form (QuantizeLinear, MatMulIntegerToFloat) must compute what the plain-op form computes, at
every onnxruntime graph optimization level (its MatMulIntegerToFloat fusion assumes a scalar activation
scale), and keep each row's result independent of the other rows. Smoothing must not change what the fp32
graph computes.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from aiforge.errors import AiforgeError
from aiforge.optimize.per_row import per_row_activations
from aiforge.optimize.quantize import RECIPES, QuantRecipe, quantize_recipe
from aiforge.optimize.smooth import down_projections, smooth_matmuls

LEVELS = ("ORT_DISABLE_ALL", "ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_ALL")


def _ffn(path: Path, *, k: int = 32, f: int = 96, seed: int = 0) -> None:
    """x [B, S, k] -> MatMul(k -> f) + bias -> Relu -> MatMul(f -> k, a down-projection) + bias: one FFN."""
    rng = np.random.default_rng(seed)
    up = (rng.standard_normal((k, f)) / np.sqrt(k)).astype(np.float32)
    down = (rng.standard_normal((f, k)) / np.sqrt(f)).astype(np.float32)
    down[3] *= 20  # an outlier input channel, as GELU outputs have
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "up"], ["h0"], name="up"), helper.make_node("Add", ["h0", "b_up"], ["h1"]),
         helper.make_node("Relu", ["h1"], ["h"]), helper.make_node("MatMul", ["h", "down"], ["y0"], name="down"),
         helper.make_node("Add", ["y0", "b_down"], ["y"])],
        "ffn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", k]),
                helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", k])],
        [numpy_helper.from_array(up, "up"), numpy_helper.from_array(down, "down"),
         numpy_helper.from_array(rng.standard_normal(f).astype(np.float32) * 0.1, "b_up"),
         numpy_helper.from_array(rng.standard_normal(k).astype(np.float32) * 0.1, "b_down")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), str(path))


def _run(path: Path, x: np.ndarray, level: str = "ORT_ENABLE_ALL") -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {"x": x, "attention_mask": np.ones(x.shape[:2], dtype=np.int64)}
    out: np.ndarray = session.run(None, feed)[0]
    return out


def _x(batch: int, seq: int = 5, k: int = 32, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, seq, k)).astype(np.float32)


PLAIN = QuantRecipe("all", keep_embeddings_fp32=True, keep_down_projections_fp32=False)


def test_the_compact_quantizer_computes_the_plain_form_at_every_level(tmp_path: Path) -> None:
    fp32, plain, compact = tmp_path / "fp32.onnx", tmp_path / "plain.onnx", tmp_path / "compact.onnx"
    _ffn(fp32)
    quantize_recipe(fp32, plain, PLAIN, compact=False)
    quantize_recipe(fp32, compact, PLAIN)
    ops = Counter(n.op_type for n in onnx.load(str(compact)).graph.node)
    assert ops["MatMulIntegerToFloat"] == 2 and ops["QuantizeLinear"] == 2, ops
    assert ops["MatMulInteger"] == 0 and ops["Round"] == 0 and ops["DynamicQuantizeLinear"] == 0, ops
    x = _x(4)
    want = _run(plain, x)
    assert float(np.abs(want - _run(fp32, x)).max()) < 0.05 * float(np.abs(want).max())  # int8, not garbage
    for level in LEVELS:
        assert float(np.abs(_run(compact, x, level) - want).max()) < 1e-5, level


def test_a_rows_result_does_not_depend_on_the_other_rows(tmp_path: Path) -> None:
    fp32, compact = tmp_path / "fp32.onnx", tmp_path / "compact.onnx"
    _ffn(fp32)
    quantize_recipe(fp32, compact, PLAIN)
    x = _x(1)
    loud = np.concatenate([x, 50 * _x(3, seed=2)])  # batch-mates 50x larger: a shared scale would move x's codes
    for level in LEVELS:
        alone, batched = _run(compact, x, level), _run(compact, loud, level)[:1]
        assert float(np.abs(alone - batched).max()) <= 1e-6, level


def test_a_chain_the_compact_form_cannot_fuse_keeps_a_correct_scale(tmp_path: Path) -> None:
    """A rewritten quantizer whose MatMulInteger output is read twice keeps the plain rescale."""
    fp32, plain = tmp_path / "fp32.onnx", tmp_path / "plain.onnx"
    _ffn(fp32)
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32), str(plain), weight_type=QuantType.QInt8)
    model = onnx.load(str(plain))
    integer = next(n for n in model.graph.node if n.op_type == "MatMulInteger")
    model.graph.output.append(helper.make_tensor_value_info(integer.output[0], TensorProto.INT32, None))
    onnx.save(model, str(plain))
    compact, old = tmp_path / "compact.onnx", tmp_path / "old.onnx"
    per_row_activations(plain, old, compact=False)
    rewrite = per_row_activations(plain, compact)
    assert rewrite.quantizers == 2 and rewrite.matmuls == 1
    x = _x(3)
    assert float(np.abs(_run(compact, x) - _run(old, x)).max()) < 1e-5


def test_smoothing_keeps_what_the_fp32_graph_computes(tmp_path: Path) -> None:
    fp32, smoothed = tmp_path / "fp32.onnx", tmp_path / "smoothed.onnx"
    _ffn(fp32)
    assert [n.name for n in down_projections(onnx.load(str(fp32)))] == ["down"]
    feeds = [{"x": _x(2, seed=s), "attention_mask": np.ones((2, 5), dtype=np.int64)} for s in range(4)]
    record = smooth_matmuls(fp32, smoothed, calibration=feeds, alpha=0.5)
    assert (record.matmuls, record.calibration_rows) == (1, 40)
    x = _x(3, seed=9)
    want = _run(fp32, x)
    assert float(np.abs(_run(smoothed, x) - want).max()) < 1e-4 * float(np.abs(want).max())
    weights = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(smoothed)).graph.initializer}
    assert not np.allclose(weights["down"], numpy_helper.to_array(
        next(i for i in onnx.load(str(fp32)).graph.initializer if i.name == "down")))


def test_the_smoothed_recipe_needs_calibration(tmp_path: Path) -> None:
    fp32 = tmp_path / "fp32.onnx"
    _ffn(fp32)
    smoothed = next(r for r in RECIPES if r.smooth_alpha is not None)
    assert smoothed is RECIPES[0] and smoothed.needs_calibration
    with pytest.raises(AiforgeError, match="calibration"):
        quantize_recipe(fp32, tmp_path / "int8.onnx", smoothed)

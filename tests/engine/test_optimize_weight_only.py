"""Weight-only MatMulNBits (``aiforge.optimize.weight_only``) on a tiny hand-built graph: only the named MatMuls
are rewritten, and the rewritten graph computes what the fp32 one does, row by row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from aiforge.optimize.weight_only import weight_only_matmuls


def _two_matmuls() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((64, 128)).astype(np.float32)
    w2 = rng.standard_normal((128, 64)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"], name="up"),
         helper.make_node("MatMul", ["h", "w2"], ["y"], name="down")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 64])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out: np.ndarray = sess.run(None, {"x": x})[0]
    return out


def test_only_the_named_matmuls_become_matmulnbits(tmp_path: Path) -> None:
    model = weight_only_matmuls(_two_matmuls(), bits=8, block_size=32, nodes=["down"])
    ops = {n.name: n.op_type for n in model.graph.node}
    assert ops["up"] == "MatMul", ops  # onnxruntime's own nodes_to_include would have rewritten it too
    assert sorted(ops.values()) == ["MatMul", "MatMulNBits"], ops
    everything = weight_only_matmuls(_two_matmuls(), bits=8, block_size=32)
    assert [n.op_type for n in everything.graph.node] == ["MatMulNBits", "MatMulNBits"]
    onnx.save(model, str(tmp_path / "m.onnx"))
    onnx.checker.check_model(str(tmp_path / "m.onnx"))


def test_weight_only_int8_is_close_to_fp32_and_per_row() -> None:
    x = np.random.default_rng(1).standard_normal((9, 64)).astype(np.float32)
    exact = _run(_two_matmuls(), x)
    q = weight_only_matmuls(_two_matmuls(), bits=8, block_size=32)
    approx = _run(q, x)
    assert float(np.abs(approx - exact).max()) < 0.05 * float(np.abs(exact).max())
    assert float(np.abs(approx - exact).max()) > 0  # it is quantized
    alone = np.stack([_run(q, x[i:i + 1])[0] for i in range(len(x))])
    np.testing.assert_allclose(alone, approx, atol=1e-5)  # a row's result does not depend on the others

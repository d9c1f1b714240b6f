"""The int8 recipe table: which nodes each recipe keeps in fp32 (a tiny hand-built ONNX graph, no training)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from aiforge.tasks.image.export import INT8_RECIPES, StaticRecipe, _excluded


def _graph(path: Path) -> None:
    w = numpy_helper.from_array(np.ones((4, 4, 1, 1), np.float32), "w")
    nodes, prev = [], "pixels"
    for i in range(4):
        nodes.append(helper.make_node("Conv", [prev, "w"], [f"c{i}"], name=f"conv{i}"))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"))
        prev = f"r{i}"
    nodes.append(helper.make_node("Softmax", [prev], ["probabilities"], name="softmax"))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [1, 4, 2, 2])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, 4, 2, 2])], [w])
    onnx.save(helper.make_model(graph), str(path))


def test_fp32_first_convs_keeps_the_leading_nodes(tmp_path: Path) -> None:
    path = tmp_path / "g.onnx"
    _graph(path)
    assert _excluded(path, StaticRecipe("all", "minmax")) == []
    assert _excluded(path, StaticRecipe("first2", "minmax", fp32_first_convs=2)) == ["conv0", "relu0", "conv1", "relu1"]
    assert _excluded(path, StaticRecipe("first9", "minmax", fp32_first_convs=9))[-1] == "softmax"
    both = _excluded(path, StaticRecipe("both", "minmax", fp32_last_convs=1, fp32_first_convs=1))
    assert both == ["conv0", "conv3", "relu0"]  # no duplicates


def test_recipe_table_goes_from_most_to_least_int8() -> None:
    names = [r.name for r in INT8_RECIPES]
    assert len(names) == len(set(names))
    firsts = [r.fp32_first_convs for r in INT8_RECIPES if r.fp32_first_convs]
    assert firsts == sorted(firsts) and INT8_RECIPES[-1].fp32_first_convs == max(firsts)

"""int8 dynamic quantization recipes, tried in order until one meets the parity budget.

Each recipe is a row of a table. The first quantizes every weight matrix and the token embeddings
with per-channel weight scales, after SmoothQuant factors (:mod:`aiforge.optimize.smooth`, alpha 0.5,
fitted on calibration texts) have moved the FFN down-projections' activation outliers into their
weights: on BANKING77 (3,080 test texts) it agrees with fp32 on 99.42 % of top-1 labels at 23.0 MB,
with every weight MatMul in int8. A caller without calibration texts skips it. The next quantizes
every weight per tensor without smoothing (97.2 % there); later ones keep the most outlier-prone
layers in fp32: the FFN down-projections (wide -> narrow, whose inputs carry the GELU outliers; 33.5 MB,
99.12 %), then the embeddings too (69.9 MB): the token embeddings quantize almost losslessly.
Activation x activation MatMuls (attention scores) are never quantized: dynamic
quantization of both operands costs accuracy and gains little.

Activations are quantized with one scale per row (per token), not per batch tensor
(:mod:`aiforge.optimize.per_row`), so an item's output never depends on its batch-mates.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aiforge.errors import AiforgeError
from aiforge.optimize.fuse import fuse_transformer
from aiforge.optimize.per_row import per_row_activations
from aiforge.optimize.smooth import smooth_matmuls

__all__ = ["RECIPES", "STATIC_RECIPES", "QuantRecipe", "quantize_recipe", "quantize_with_parity"]


@dataclass(frozen=True)
class QuantRecipe:
    """One way to quantize: which node kinds stay fp32, per-channel or per-tensor weight scales, and
    whether activation scales are calibrated once (``static``: QDQ) or computed per row at run time, and
    the SmoothQuant ``smooth_alpha`` of the down-projections (None: not smoothed)."""

    name: str
    keep_embeddings_fp32: bool
    keep_down_projections_fp32: bool
    per_channel: bool = False
    static: bool = False
    calibration: str = "minmax"  # static only: "minmax" or "percentile" (99.999th of |activation|)
    smooth_alpha: float | None = None
    reduce_range: bool = False  # 7-bit weights (onnxruntime's reduce_range): measured, not shipped (bundle/cpu.py)

    @property
    def needs_calibration(self) -> bool:
        """Whether the recipe reads calibration feeds (static scales or smoothing factors)."""
        return self.static or self.smooth_alpha is not None


RECIPES: tuple[QuantRecipe, ...] = (
    QuantRecipe("smoothed-per-channel-weights+embeddings", keep_embeddings_fp32=False,
                keep_down_projections_fp32=False, per_channel=True, smooth_alpha=0.5),
    QuantRecipe("weights+embeddings", keep_embeddings_fp32=False, keep_down_projections_fp32=False),
    QuantRecipe("embeddings+weights-except-down-projections", keep_embeddings_fp32=False,
                keep_down_projections_fp32=True),
    QuantRecipe("weights-except-down-projections", keep_embeddings_fp32=True, keep_down_projections_fp32=True),
    QuantRecipe("per-channel-except-down-projections", keep_embeddings_fp32=True, keep_down_projections_fp32=True,
                per_channel=True),
)


# Calibrated activation scales (QDQ; onnxruntime runs QLinearMatMul, no run-time quantizers): measured
# by bench/optimize.py, not shipped: on BANKING77 (3,080 test texts) they agree with fp32 on 98.8 %
# (minmax) and 98.4 % (percentile) of top-1 labels, under the 99 % gate (bench/results/optimize.json).
STATIC_RECIPES: tuple[QuantRecipe, ...] = (
    QuantRecipe("static-minmax-except-down-projections", keep_embeddings_fp32=False,
                keep_down_projections_fp32=True, per_channel=True, static=True),
    QuantRecipe("static-percentile-except-down-projections", keep_embeddings_fp32=False,
                keep_down_projections_fp32=True, per_channel=True, static=True, calibration="percentile"),
)


def _excluded_nodes(model_path: Path, recipe: QuantRecipe) -> list[str]:
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    weights = {init.name: tuple(init.dims) for init in graph.initializer}
    constants = {out for node in graph.node if node.op_type == "Constant" for out in node.output}
    excluded = []
    for node in graph.node:
        if node.op_type == "MatMul":
            shapes = [weights[i] for i in node.input if i in weights]
            if not shapes and not any(i in constants for i in node.input):
                excluded.append(node.name)  # activation x activation
            elif recipe.keep_down_projections_fp32 and shapes and len(shapes[0]) == 2 and shapes[0][0] > shapes[0][1]:
                excluded.append(node.name)  # FFN output (wide -> narrow): activations with outliers
        elif node.op_type == "Gather" and recipe.keep_embeddings_fp32:
            excluded.append(node.name)
    return excluded


class _Feeds:
    """onnxruntime's CalibrationDataReader protocol over a list of feed dicts."""

    def __init__(self, feeds: Iterable[Mapping[str, np.ndarray]]) -> None:
        self._feeds = iter(feeds)

    def get_next(self) -> Mapping[str, np.ndarray] | None:
        return next(self._feeds, None)


def _typed(fp32_path: Path, out: Path) -> None:
    """``fp32_path`` with a float type on every ``com.microsoft`` node output: without one the static
    quantizer leaves the activations a fused op (SkipLayerNormalization) writes in fp32, and onnxruntime
    then runs those MatMuls weight-only (MatMulNBits), slower than the per-row graph."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.shape_inference.infer_shapes(onnx.load(str(fp32_path)))
    graph = model.graph
    known = {v.name for v in [*graph.value_info, *graph.input, *graph.output]} | {i.name for i in graph.initializer}
    graph.value_info.extend(helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for n in graph.node
                            if n.domain == "com.microsoft" for o in n.output if o and o not in known)
    onnx.save(model, str(out))


def _quantize_static(fp32_path: Path, int8_path: Path, recipe: QuantRecipe,
                     calibration: Iterable[Mapping[str, np.ndarray]]) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}[recipe.calibration]
    with tempfile.TemporaryDirectory(prefix="aiforge-static-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        typed = Path(tmp) / "typed.onnx"
        _typed(fp32_path, typed)
        quantize_static(str(typed), str(int8_path), _Feeds(calibration), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=["MatMul", "Gather"], per_channel=recipe.per_channel,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=_excluded_nodes(fp32_path, recipe), calibrate_method=method,
                        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": True,
                                       "CalibMovingAverage": False, "CalibPercentile": 99.999})


def quantize_recipe(fp32_path: Path, int8_path: Path, recipe: QuantRecipe, *, per_row: bool = True,
                    calibration: Iterable[Mapping[str, np.ndarray]] | None = None, compact: bool = True) -> None:
    """Write ``int8_path``: ``fp32_path`` quantized with ``recipe``; ``per_row=False`` keeps onnxruntime's
    per-tensor activation scales (batch-dependent: only for comparisons). A static recipe reads its
    activation ranges, a smoothed one its smoothing factors, from ``calibration`` (the graph's feeds, e.g.
    batches of training texts). ``compact=False`` writes the per-row quantizers in their older plain-op form.

    Raises:
        AiforgeError: a recipe that needs calibration without ``calibration``.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))  # "consider pre-processing"
    if recipe.needs_calibration and calibration is None:
        raise AiforgeError(f"int8 recipe {recipe.name!r} needs calibration feeds (batches of training items).")
    if recipe.static:
        assert calibration is not None
        _quantize_static(fp32_path, int8_path, recipe, calibration)
        return
    with tempfile.TemporaryDirectory(prefix="aiforge-smooth-") as tmp:
        source = fp32_path
        if recipe.smooth_alpha is not None:
            assert calibration is not None
            source = Path(tmp) / "smoothed.onnx"
            smooth_matmuls(fp32_path, source, calibration=calibration, alpha=recipe.smooth_alpha)
        quantize_dynamic(str(source), str(int8_path), weight_type=QuantType.QInt8,
                         per_channel=recipe.per_channel, reduce_range=recipe.reduce_range,
                         nodes_to_exclude=_excluded_nodes(source, recipe),
                         # fused graphs: com.microsoft ops have no ONNX shape inference, their outputs no type
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    if per_row:
        per_row_activations(int8_path, compact=compact)


def quantize_with_parity(fp32_path: Path, int8_path: Path, *, agreement: Callable[[Path], float],
                         min_agreement: float, num_heads: int | None = None,
                         calibration: Callable[[], Iterable[Mapping[str, np.ndarray]]] | None = None
                         ) -> dict[str, Any]:
    """Quantize ``fp32_path`` with each recipe in turn; keep the first whose top-1 agreement
    with fp32 (``agreement(path)``) reaches ``min_agreement``. ``calibration()`` gives a fresh iterable of
    the graph's feeds for each recipe that needs them; without it those recipes are skipped.

    With ``num_heads`` (a transformer encoder's attention heads) the fp32 graph is fused first
    (:func:`aiforge.optimize.fuse.fuse_transformer`) and the fused graph is quantized; a graph the
    fuser finds no attention in is quantized as it is.

    Returns the record of every try; ``int8_path`` exists only when a recipe passed.
    """
    tries = []
    with tempfile.TemporaryDirectory(prefix="aiforge-fuse-") as tmp:
        source, fused = fp32_path, None
        if num_heads:
            record = fuse_transformer(fp32_path, Path(tmp) / "fused.onnx", num_heads=num_heads)
            if record.attention:
                source, fused = Path(tmp) / "fused.onnx", record.to_dict()
        for recipe in RECIPES:
            if recipe.needs_calibration and calibration is None:
                continue
            quantize_recipe(source, int8_path, recipe,
                            calibration=calibration() if calibration is not None and recipe.needs_calibration
                            else None)
            score = agreement(int8_path)
            tries.append({"recipe": recipe.name, "top1_agreement": score})
            if score >= min_agreement:
                return {"recipe": recipe.name, "tries": tries, "ok": True, "fused": fused}
    int8_path.unlink(missing_ok=True)
    return {"recipe": None, "tries": tries, "ok": False, "fused": fused}

"""Class-activation maps at serve time, without PyTorch: a ``cam`` output added to the fp32 graph at export.

For a linear head over globally averaged features the class score is the spatial mean of
``W_c · F(x, y) + b_c``, so ``W_c · F(x, y)`` is the class-activation map (CAM, Zhou et al. 2016;
Grad-CAM's map for this head up to a constant, Selvaraju et al. 2017). At export,
:func:`add_cam_output` appends to ``model.onnx`` the head applied at every location of the last
convolutional feature map, minus the head at zero (so a linear head gives exactly ``W_c · F``; an
MLP head its per-location class evidence), as a second output ``cam`` of shape
(n, classes, h, w), and makes the input's height and width dynamic. The ``probabilities`` output
and the int8 graph (quantized before this step) are unchanged.

At serve time (:func:`cam_pixels`, :func:`class_map`, :func:`heatmap_png`) the whole image (no
centre crop) is resized, keeping its aspect, at the scale classification uses (shorter side to the
bundle's ``resize``, so objects are the size the model learnt them at; a 224 px model gets an 8x8
map of a square image), enlarged where needed so the longer side is at least :data:`CAM_SIDE`
pixels (a 32 px model's own map would be 1x1). The feature map then has the image's aspect. The
chosen class's map is ReLU'd, scaled to [0, 1] and drawn as a PNG of the image's aspect. A small
model's map at the enlarged scale is coarse and can be led by the background where the model
itself uses it (a 32 px Fashion-MNIST "Sneaker" is mostly black background).
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from aiforge.tasks.image.preprocess import ImageConfig, check_aspect, to_rgb

__all__ = ["CAM_OUTPUT", "CAM_SIDE", "add_cam_output", "cam_pixels", "class_map", "heatmap_png", "jet"]

CAM_OUTPUT = "cam"
CAM_SIDE = 128  # the least longer side of the image the map is computed on: at stride 32, 4 cells
_STRIDE = 32
PNG_SIDE = 256  # longer side of the heat map PNG


def add_cam_output(path: Path, head: Any) -> bool:
    """Add the ``cam`` output to the fp32 graph at ``path`` (in place); False when the head is not
    Linear/ReLU/Dropout layers or the graph has no global average pool to start from."""
    import onnx  # lazy: export-time only (graph surgery), never on the serving path
    import torch
    from onnx import helper, numpy_helper

    layers = list(head) if isinstance(head, torch.nn.Sequential) else [head]
    if not all(isinstance(m, torch.nn.Linear | torch.nn.ReLU | torch.nn.Dropout | torch.nn.Identity) for m in layers):
        return False
    model = onnx.load(str(path))
    graph = model.graph
    pools = [n for n in graph.node if n.op_type in ("ReduceMean", "GlobalAveragePool")]
    if not pools:
        return False
    features = pools[-1].input[0]
    nodes, inits = [], []
    x = "cam_nhwc"
    nodes.append(helper.make_node("Transpose", [features], [x], perm=[0, 2, 3, 1], name="cam_transpose_in"))
    with torch.no_grad():
        first = next(m for m in layers if isinstance(m, torch.nn.Linear))
        at_zero = head.eval()(torch.zeros(1, first.in_features)).numpy()[0].astype(np.float32)
    for i, layer in enumerate(layers):
        if isinstance(layer, torch.nn.Linear):
            w = layer.weight.detach().cpu().numpy().T.astype(np.float32)
            inits.append(numpy_helper.from_array(np.ascontiguousarray(w), f"cam_w{i}"))
            nodes.append(helper.make_node("MatMul", [x, f"cam_w{i}"], [f"cam_mm{i}"], name=f"cam_matmul{i}"))
            x = f"cam_mm{i}"
            if layer.bias is not None:
                inits.append(numpy_helper.from_array(layer.bias.detach().cpu().numpy().astype(np.float32), f"cam_b{i}"))
                nodes.append(helper.make_node("Add", [x, f"cam_b{i}"], [f"cam_add{i}"], name=f"cam_add{i}"))
                x = f"cam_add{i}"
        elif isinstance(layer, torch.nn.ReLU):
            nodes.append(helper.make_node("Relu", [x], [f"cam_relu{i}"], name=f"cam_relu{i}"))
            x = f"cam_relu{i}"
    inits.append(numpy_helper.from_array(at_zero, "cam_at_zero"))
    nodes.append(helper.make_node("Sub", [x, "cam_at_zero"], ["cam_nhwc_out"], name="cam_minus_zero"))
    nodes.append(helper.make_node("Transpose", ["cam_nhwc_out"], [CAM_OUTPUT], perm=[0, 3, 1, 2],
                                  name="cam_transpose_out"))
    graph.node.extend(nodes)
    graph.initializer.extend(inits)
    graph.output.append(helper.make_tensor_value_info(CAM_OUTPUT, onnx.TensorProto.FLOAT,
                                                      ["batch", len(at_zero), "cam_h", "cam_w"]))
    dims = graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "height", "width"  # setting dim_param clears the fixed size
    del graph.value_info[:]  # shapes inferred at the export resolution; the graph now takes any size
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return True


def _side(n: float) -> int:
    return max(_STRIDE, round(n / _STRIDE) * _STRIDE)


def cam_pixels(img: Image.Image, cfg: ImageConfig, *, side: int = CAM_SIDE, where: str = "image") -> np.ndarray:
    """The whole image (no crop), aspect kept, at classification's scale (longer side at least ``CAM_SIDE``).

    Returns (3, h, w) float32, h and w multiples of the network's stride 32.

    Raises:
        InputError: the aspect ratio is over the limit (as for classification).
    """
    w, h = img.size
    check_aspect(w, h, where=where)
    scale = max(cfg.resize / min(w, h), side / max(w, h))
    size = (_side(w * scale), _side(h * scale))
    rgb = to_rgb(img).resize(size, Image.Resampling.BILINEAR)
    arr = np.asarray(rgb, dtype=np.float32)
    return np.ascontiguousarray(((arr - cfg.mean) / cfg.std).transpose(2, 0, 1))


def class_map(cam: np.ndarray, cls: int) -> np.ndarray:
    """One class's map of a (classes, h, w) ``cam`` output: ReLU'd and scaled to [0, 1] (all zero if no evidence)."""
    m = np.maximum(np.asarray(cam[cls], dtype=np.float64), 0.0)
    top = float(m.max()) if m.size else 0.0
    return (m / top if top > 0 else m).astype(np.float32)


def jet(v: np.ndarray) -> np.ndarray:
    """The 'jet' colour map (blue -> red) for values in [0, 1], as uint8 RGB."""
    r = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
    return (np.stack([r, g, b], axis=-1) * 255).astype(np.uint8)


def heatmap_png(m: np.ndarray, *, width: int, height: int) -> tuple[str, int, int]:
    """The map as a jet-coloured RGBA PNG data URL of the image's aspect (longer side ``PNG_SIDE``)."""
    scale = PNG_SIDE / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    grey = Image.fromarray((np.clip(m, 0, 1) * 255).astype(np.uint8), "L").resize(size, Image.Resampling.BICUBIC)
    v = np.asarray(grey, dtype=np.float32) / 255.0
    rgba = np.dstack([jet(v), (60 + 160 * v).astype(np.uint8)])  # cold areas fainter
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), size[0], size[1]

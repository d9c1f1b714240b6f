"""One way to write a PyTorch module as a single-file ONNX graph with dynamic axes."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch

from aiforge.errors import ExportError

__all__ = ["export_onnx"]


def export_onnx(graph: torch.nn.Module, example: tuple[torch.Tensor, ...], path: Path, *, inputs: list[str],
                outputs: list[str], dynamic: dict[str, dict[int, str]], opset: int = 18,
                torchscript_fallback: bool = True, what: str = "ONNX") -> str:
    """Export with the dynamo exporter (weights inside the file); fall back to TorchScript tracing.

    ``dynamic`` maps a tensor name (input or output) to its dynamic axes, e.g.
    ``{"pixels": {0: "batch"}}``; the dynamo exporter takes the inputs' entries (the module's
    ``forward`` argument names must match ``inputs``), TorchScript all of them. Returns the
    exporter used ("dynamo" or "torchscript").

    Raises:
        ExportError: neither exporter could write the graph (``what`` names it in the message).
    """
    dims = {name: torch.export.Dim(name) for axes in dynamic.values() for name in axes.values()}
    shapes = {name: {axis: dims[dim] for axis, dim in dynamic[name].items()} for name in inputs if name in dynamic}
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" notes
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(graph, example, str(path), input_names=inputs, output_names=outputs,
                              dynamic_shapes=shapes, external_data=False, dynamo=True, verbose=False, report=False)
        return "dynamo"
    except Exception as first:
        if not torchscript_fallback:
            raise ExportError(f"{what} export failed: {first}") from first
        logging.getLogger(__name__).warning("dynamo export failed (%s); using TorchScript export", first)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(graph, example, str(path), input_names=inputs, output_names=outputs, dynamo=False,
                              opset_version=opset, dynamic_axes=dynamic)
        return "torchscript"
    except Exception as exc:
        raise ExportError(f"{what} export failed: {exc}") from exc

"""Export a fitted text classifier: one ONNX graph (encoder + pooling + head + softmax),
an int8 dynamically quantized copy, the tokenizer, and parity checks against PyTorch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aiforge.data.splits import stratified_split
from aiforge.errors import ExportError
from aiforge.hub.text_encoder import iter_batches
from aiforge.optimize.onnx_export import export_onnx
from aiforge.tasks.text.data import TextDataset
from aiforge.tasks.text.model import ProbabilityGraph

if TYPE_CHECKING:
    from aiforge.tasks.text.fitted import FittedTextClassifier


__all__ = ["FP32_GRAPH", "INT8_GRAPH", "export_text_classifier"]


FP32_GRAPH = "model.onnx"


INT8_GRAPH = "model.int8.onnx"


INPUTS = ["input_ids", "attention_mask"]


OUTPUT = "probabilities"


def _onnx_probs(path: Path, fitted: FittedTextClassifier, texts: list[str]) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = np.zeros((len(texts), len(fitted.labels)), dtype=np.float32)
    for idx, ids, mask in iter_batches(fitted.tokenizer, texts, 64):
        out[idx] = sess.run([OUTPUT], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    return out


def export_text_classifier(fitted: FittedTextClassifier, directory: Path, *,
                           parity_data: TextDataset) -> dict[str, Any]:
    """Write graphs, tokenizer and ``pipeline.json`` into ``directory``; return the parity record.

    The fp32 graph must match PyTorch within ``optimize.max_prob_diff``; the int8 graph is
    kept only when its top-1 agreement with fp32 reaches ``optimize.min_int8_agreement``.

    Raises:
        ExportError: export failed or the fp32 graph does not match PyTorch.
    """
    opt = fitted.spec.optimize
    directory.mkdir(parents=True, exist_ok=True)
    n = min(len(parity_data), opt.parity_samples)
    if n < len(parity_data):  # a stratified sample: test files are often grouped by label
        _, held = stratified_split(parity_data.labels, fraction=n / len(parity_data), seed=fitted.spec.train.seed)
        data = parity_data.subset(held)
    else:
        data = parity_data
    texts = data.texts
    graph = ProbabilityGraph(fitted.model).eval()
    _, ids, mask = next(iter_batches(fitted.tokenizer, texts[:2] or ["example"], 2, sort=False))
    exporter = export_onnx(graph, (ids, mask), directory / FP32_GRAPH, inputs=INPUTS, outputs=[OUTPUT],
                           dynamic={"input_ids": {0: "batch", 1: "sequence"},
                                    "attention_mask": {0: "batch", 1: "sequence"}, OUTPUT: {0: "batch"}})

    torch_probs = fitted.predict_proba(texts)
    fp32 = _onnx_probs(directory / FP32_GRAPH, fitted, texts)
    max_diff = float(np.abs(fp32 - torch_probs).max())
    index = {y: i for i, y in enumerate(fitted.labels)}
    truth = np.array([index.get(y, -1) for y in data.labels])
    parity: dict[str, Any] = {
        "samples": len(data),
        "source": data.source,
        "exporter": exporter,
        "fp32_vs_torch_max_abs_prob_diff": max_diff,
        "fp32_max_abs_prob_diff_limit": opt.max_prob_diff,
        "fp32_ok": max_diff < opt.max_prob_diff,
        "torch_accuracy": float((torch_probs.argmax(1) == truth).mean()),
        "fp32_accuracy": float((fp32.argmax(1) == truth).mean()),
    }
    if not parity["fp32_ok"]:
        raise ExportError(
            f"ONNX fp32 graph differs from PyTorch by {max_diff:.2e} in probability "
            f"(limit {opt.max_prob_diff:.0e}); refusing to write a bundle that predicts differently."
        )
    graphs = {"fp32": FP32_GRAPH}
    default = "fp32"
    if opt.quantize:
        from aiforge.optimize.quantize import quantize_with_parity

        outcome: dict[str, np.ndarray] = {}

        def agreement(path: Path) -> float:
            outcome["int8"] = _onnx_probs(path, fitted, texts)
            return float((outcome["int8"].argmax(1) == fp32.argmax(1)).mean())

        quant = quantize_with_parity(directory / FP32_GRAPH, directory / INT8_GRAPH, agreement=agreement,
                                     min_agreement=opt.min_int8_agreement)
        int8 = outcome["int8"]
        parity.update({
            "int8_recipe": quant["recipe"],
            "int8_tries": quant["tries"],
            "int8_top1_agreement": quant["tries"][-1]["top1_agreement"],
            "int8_min_agreement": opt.min_int8_agreement,
            "int8_accuracy": float((int8.argmax(1) == truth).mean()),
            "int8_vs_fp32_max_abs_prob_diff": float(np.abs(int8 - fp32).max()),
            "int8_ok": quant["ok"],
        })
        if quant["ok"]:
            graphs["int8"] = INT8_GRAPH
            default = "int8"
        else:
            parity["int8_dropped"] = "no recipe reached the top-1 agreement limit; the bundle ships fp32 only"

    fitted.tokenizer.save(str(directory / "tokenizer.json"))
    pipeline = {
        "task": "text-classification",
        "labels": fitted.labels,
        "max_length": fitted.max_length,
        "inputs": INPUTS,
        "output": OUTPUT,
        "graphs": graphs,
        "default_precision": default,
        "tokenizer": "tokenizer.json",
        "backbone": fitted.backbone.name,
    }
    (directory / "pipeline.json").write_text(json.dumps(pipeline, indent=2), encoding="utf-8")
    return parity

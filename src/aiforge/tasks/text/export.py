"""Export a fitted text classifier: one ONNX graph (encoder + pooling + head + softmax),
an int8 copy (the graph fused, its down-projections smoothed on training texts, then dynamically
quantized with per-row activation scales), the tokenizer, and parity checks against PyTorch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aiforge.audit.card import classifier_gate_results, group_audit_card
from aiforge.audit.fairness import AuditSettings
from aiforge.bundle.out_of_scope import DistanceScorer
from aiforge.bundle.parts import BundleParts, Int8Parity, Parity
from aiforge.errors import ExportError
from aiforge.hub.text_encoder import iter_batches
from aiforge.optimize.fuse import backbone_heads
from aiforge.optimize.onnx_export import export_onnx
from aiforge.optimize.quantize import quantize_with_parity
from aiforge.tasks.text.card import out_of_scope_card, text_classifier_card
from aiforge.tasks.text.checks import group_audit
from aiforge.tasks.text.data import TextDataset
from aiforge.tasks.text.model import ProbabilityGraph
from aiforge.tasks.text.out_of_scope import OOS_EXAMPLES, OOS_MEANS, OOS_PRECISION
from aiforge.tasks.text.parity import calibration_texts, gate_size, parity_sample
from aiforge.tasks.text.spec import TextSpec

if TYPE_CHECKING:
    from aiforge.tasks.text.fitted import FittedTextClassifier, TextFitResult


__all__ = ["FP32_GRAPH", "INT8_GRAPH", "calibration_feeds", "export_text_classifier", "text_pipeline",
           "write_text_bundle"]


FP32_GRAPH = "model.onnx"


INT8_GRAPH = "model.int8.onnx"


INPUTS = ["input_ids", "attention_mask"]


OUTPUT = "probabilities"


FEATURES = "features"


TOKENIZER = "tokenizer.json"


AUDIT = "audit.json"


def _onnx_probs(path: Path, fitted: FittedTextClassifier, texts: list[str]) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = np.zeros((len(texts), len(fitted.labels)), dtype=np.float32)
    for idx, ids, mask in iter_batches(fitted.tokenizer, texts, 64):
        out[idx] = sess.run([OUTPUT], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    return out


def calibration_feeds(fitted: FittedTextClassifier, texts: list[str]) -> list[dict[str, np.ndarray]]:
    """The graph's feeds for ``texts`` in batches of 16, each padded to its longest text."""
    from aiforge.bundle.tokens import encode_batches

    return [{"input_ids": ids, "attention_mask": mask} for _, ids, mask in encode_batches(fitted.tokenizer, texts, 16)]


def export_text_classifier(fitted: FittedTextClassifier, directory: Path, *, parity_data: TextDataset,
                           features: bool = False, calibration: TextDataset | None = None) -> Parity:
    """Write the graphs and the tokenizer into ``directory``; return the parity record.

    The fp32 graph must match PyTorch within ``optimize.max_prob_diff``; the int8 graph is
    kept only when its top-1 agreement with fp32 reaches ``optimize.min_int8_agreement``.
    ``calibration`` (the training split) gives the texts a smoothed int8 recipe fits its factors on;
    without it those recipes are skipped.

    Raises:
        ExportError: export failed or the fp32 graph does not match PyTorch.
    """
    opt = fitted.spec.optimize
    directory.mkdir(parents=True, exist_ok=True)
    data = parity_sample(parity_data, opt.parity_samples, seed=fitted.spec.train.seed)
    texts = data.texts
    graph = ProbabilityGraph(fitted.model, features=features).eval()
    _, ids, mask = next(iter_batches(fitted.tokenizer, texts[:2] or ["example"], 2, sort=False))
    outputs = [OUTPUT, FEATURES] if features else [OUTPUT]
    exporter = export_onnx(graph, (ids, mask), directory / FP32_GRAPH, inputs=INPUTS, outputs=outputs,
                           dynamic={"input_ids": {0: "batch", 1: "sequence"},
                                    "attention_mask": {0: "batch", 1: "sequence"},
                                    **{o: {0: "batch"} for o in outputs}})

    torch_probs = fitted.predict_proba(texts)
    fp32 = _onnx_probs(directory / FP32_GRAPH, fitted, texts)
    max_diff = float(np.abs(fp32 - torch_probs).max())
    index = {y: i for i, y in enumerate(fitted.labels)}
    truth = np.array([index.get(y, -1) for y in data.labels])
    if not max_diff < opt.max_prob_diff:  # written so that a NaN difference fails too
        raise ExportError(
            f"ONNX fp32 graph differs from PyTorch by {max_diff:.2e} in probability "
            f"(limit {opt.max_prob_diff:.0e}); refusing to write a bundle that predicts differently."
        )
    details: dict[str, Any] = {
        "source": data.source,
        "exporter": exporter,
        "fp32_max_abs_prob_diff_limit": opt.max_prob_diff,
        "fp32_ok": True,
        "torch_accuracy": float((torch_probs.argmax(1) == truth).mean()),
        "fp32_accuracy": float((fp32.argmax(1) == truth).mean()),
    }
    int8 = None
    if opt.quantize:
        # the int8 gate reads more held-out texts than the PyTorch check: it needs no PyTorch forward
        gate = parity_sample(parity_data, gate_size(opt.parity_samples), seed=fitted.spec.train.seed)
        gate_fp32 = fp32 if len(gate) == len(data) else _onnx_probs(directory / FP32_GRAPH, fitted, gate.texts)
        gate_truth = np.array([index.get(y, -1) for y in gate.labels])
        outcome: dict[str, np.ndarray] = {}

        def agreement(path: Path) -> float:
            outcome["int8"] = _onnx_probs(path, fitted, gate.texts)
            return float((outcome["int8"].argmax(1) == gate_fp32.argmax(1)).mean())

        calib = (calibration_texts(list(calibration.texts), seed=fitted.spec.train.seed)
                 if calibration is not None and len(calibration) else None)
        quant = quantize_with_parity(directory / FP32_GRAPH, directory / INT8_GRAPH, agreement=agreement,
                                     min_agreement=opt.min_int8_agreement,
                                     num_heads=backbone_heads(fitted.backbone.name),
                                     calibration=(lambda: calibration_feeds(fitted, calib)) if calib else None)
        probs = outcome["int8"]
        int8_details: dict[str, Any] = {"tries": quant["tries"], "fused": quant["fused"], "gate_samples": len(gate),
                                        "gate_margin": quant["tries"][-1]["top1_agreement"] - opt.min_int8_agreement,
                                        "vs_fp32_max_abs_prob_diff": float(np.abs(probs - gate_fp32).max())}
        if not quant["ok"]:
            int8_details["dropped"] = "no recipe reached the top-1 agreement limit; the bundle ships fp32 only"
        int8 = Int8Parity(ok=quant["ok"], top1_agreement=quant["tries"][-1]["top1_agreement"],
                          min_agreement=opt.min_int8_agreement, accuracy=float((probs.argmax(1) == gate_truth).mean()),
                          recipe=quant["recipe"], details=int8_details)
    fitted.tokenizer.save(str(directory / TOKENIZER))
    return Parity(samples=len(data), max_abs_diff=max_diff, diff_key="fp32_vs_torch_max_abs_prob_diff",
                  int8=int8, details=details)


def text_pipeline(fitted: FittedTextClassifier, parity: Parity) -> dict[str, Any]:
    """``pipeline.json``: what TextRuntime reads (graphs, labels, tokenizer, default precision)."""
    int8 = parity.int8 is not None and parity.int8.ok
    return {
        "task": "text-classification",
        "labels": fitted.labels,
        "max_length": fitted.max_length,
        "inputs": INPUTS,
        "output": OUTPUT,
        "graphs": {"fp32": FP32_GRAPH, **({"int8": INT8_GRAPH} if int8 else {})},
        "default_precision": "int8" if int8 else "fp32",
        "tokenizer": TOKENIZER,
        "backbone": fitted.backbone.name,
    }


def write_group_audit(staged: Path, *, spec: TextSpec, fitted: FittedTextClassifier, test: TextDataset,
                      graph: str, split: str) -> str:
    """``audit.json`` of the exported graph on ``test`` per group column, and the card's section on it.

    The gates of the spec that need no timing (quality and per-group) are decided on the same numbers.
    """
    gates = spec.gates
    probs = _onnx_probs(staged / graph, fitted, test.texts)
    body = group_audit(test, probs, fitted.labels, AuditSettings(min_group_size=gates.min_group_size))
    features = list(gates.sensitive_features or test.groups)
    results = classifier_gate_results(body, gates, features)
    body["split"] = split
    body["gates"] = [r.to_dict() for r in results]
    (staged / AUDIT).write_text(json.dumps(body, indent=2), encoding="utf-8")
    return group_audit_card(body, results, split=f"the {split} ({len(test)} rows, {graph})")


def write_text_bundle(staged: Path, *, spec: TextSpec, result: TextFitResult) -> BundleParts:
    """Graphs, tokenizer, pipeline, metrics and card of a fitted text classifier (``export_bundle``'s writer).

    Raises:
        ExportError: export failed or the fp32 graph does not match PyTorch.
    """
    fitted, splits = result.fitted, result.splits
    oos = result.out_of_scope
    parity = export_text_classifier(fitted, staged, parity_data=splits.test or splits.validation,
                                    features=oos is not None and oos.scorer is not None, calibration=splits.train)
    metrics: dict[str, Any] = {
        "validation": result.validation.to_dict(),
        "test": result.test.to_dict() if result.test else None,
        "train_seconds": result.train_seconds,
        "history": result.history,
    }
    pipeline = text_pipeline(fitted, parity)
    if oos is not None:
        if isinstance(oos.scorer, DistanceScorer):
            np.save(staged / OOS_MEANS, oos.scorer.means, allow_pickle=False)
            np.save(staged / OOS_PRECISION, oos.scorer.precision, allow_pickle=False)
        elif oos.scorer is not None:
            np.save(staged / OOS_EXAMPLES, oos.scorer.examples, allow_pickle=False)
        pipeline["out_of_scope"] = oos.pipeline()
        metrics["out_of_scope"] = {"method": oos.spec.method, "threshold": oos.threshold,
                                   "calibration": oos.calibration, **oos.metrics}
    data = {
        "train": str(spec.data.train), "validation": str(spec.data.validation or "split from train"),
        "test": str(spec.data.test) if spec.data.test else None, "n_train": len(splits.train),
        "n_validation": len(splits.validation), "n_test": len(splits.test) if splits.test else 0,
    }
    card = text_classifier_card(
        name=spec.name, backbone=fitted.backbone, mode=spec.model.mode, labels=fitted.labels,
        data=data, metrics=metrics, parity=parity.to_dict(), train_seconds=result.train_seconds,
        groups=bool(spec.data.sensitive_features),
    ) + (out_of_scope_card(metrics["out_of_scope"], oos.spec.name) if oos is not None else "")
    scored = splits.test or splits.validation
    if spec.data.sensitive_features and scored.groups:
        split = ("test file" if spec.data.test else "held-out test split (rows that chose nothing)"
                 if splits.test is not None else "validation split")
        card += write_group_audit(staged, spec=spec, fitted=fitted, test=scored, graph=pipeline["graphs"][
            pipeline["default_precision"]], split=split)
    extra = {"backbone": fitted.backbone.record(), "mode": spec.model.mode,
             "columns": {"text": spec.data.text_column, "label": spec.data.label_column}}
    return BundleParts(pipeline=pipeline, metrics=metrics, card=card, parity=parity,
                       headline=(result.test or result.validation).headline(), extra=extra,
                       baseline=result.baseline)

"""Export a fitted image classifier: one ONNX graph (pixels -> probabilities, dynamic batch),
an int8 statically quantized copy calibrated on training images, and parity checks.

Static quantization needs activation ranges: ``calibration`` images (a stratified sample of
the training set; for a zero-shot bundle, augmented views of the bundled sample photos) are
run through the fp32 graph to collect them. Recipes are tried in order until the int8
graph's top-1 agreement with fp32 on the parity set reaches ``optimize.min_int8_agreement``;
otherwise the bundle ships fp32 only and the manifest says why.

With ``optimize.int8_fallback`` (the default) the int8 graph is *guarded*: items whose int8
top-1 margin is below a threshold are re-run through the fp32 graph by the Runtime
(:mod:`aiforge.tasks.image.fallback`). The threshold is chosen on a tuning set (validation
images) to reach ``optimize.fallback_agreement``, and the gate then checks the guarded graph on
the parity set (test images), which played no part in choosing it.
"""

from __future__ import annotations

import copy
import logging
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from aiforge.bundle.parts import BundleParts, Int8Parity, Parity
from aiforge.errors import ExportError
from aiforge.optimize.onnx_export import export_onnx
from aiforge.tasks.image.cam import CAM_OUTPUT, CAM_SIDE, add_cam_output
from aiforge.tasks.image.data import ImageSplits
from aiforge.tasks.image.dataset import ImageDataset
from aiforge.tasks.image.fallback import FALLBACK_KEY, guarded, min_margin_for
from aiforge.tasks.image.model import ProbabilityGraph
from aiforge.tasks.image.parity import sample, sample_indices
from aiforge.tasks.image.preprocess import AugmentConfig, augment, preprocess_batch
from aiforge.tasks.image.report import image_card, write_report
from aiforge.tasks.image.samples import sample_photos
from aiforge.tasks.image.spec import ImageSpec

if TYPE_CHECKING:
    from aiforge.tasks.image.fitted import FittedImageClassifier, ImageFitResult


__all__ = [
    "FP32_GRAPH",
    "INT8_GRAPH",
    "INT8_RECIPES",
    "ExportImages",
    "FallbackPolicy",
    "GateData",
    "export_image_classifier",
    "image_pipeline",
    "parity_images",
    "quantize_static_with_parity",
    "write_image_bundle",
]


FP32_GRAPH = "model.onnx"


INT8_GRAPH = "model.int8.onnx"


INPUT = "pixels"


OUTPUT = "probabilities"


@dataclass(frozen=True)
class StaticRecipe:
    """One static int8 recipe: calibration method, per-channel weights, fp32 first/last layers."""

    name: str
    method: str  # "minmax" | "percentile" | "entropy"
    per_channel: bool = True
    fp32_last_convs: int = -1  # -1: quantize everything; n >= 0: keep the first conv, the last n and the classifier
    fp32_first_convs: int = 0  # n > 0: keep every node before the n-th conv in fp32 (the early, high-resolution blocks)


INT8_RECIPES: tuple[StaticRecipe, ...] = (
    StaticRecipe("qdq-per-channel-minmax", "minmax"),
    StaticRecipe("qdq-per-channel-percentile", "percentile"),
    StaticRecipe("qdq-per-channel-minmax-fp32-ends", "minmax", fp32_last_convs=0),
    StaticRecipe("qdq-per-channel-percentile-fp32-last-stage", "percentile", fp32_last_convs=4),
    # Measured on EfficientNet-Lite0 / Fashion-MNIST at 64 px (docs/vision.md): the top-1 disagreement comes from
    # the early blocks (fp32 first 5 convs: 0.978, first 12: 0.985 on 2000 test images), not the last stage or the
    # head (fp32 tail: 0.96). Keeping the first 30 / 36 convs fp32 lands at 0.985-0.992 depending on model and
    # sample (MLP head, 10000 test images: 0.989 / 0.992; linear head, 1000 parity images: 0.991 / 0.988), so these
    # straddle a 0.99 gate rather than clear it. The rest still runs int8: ~1.7-1.9x fp32 at batch 1.
    StaticRecipe("qdq-per-channel-minmax-fp32-first-30-convs", "minmax", fp32_first_convs=30),
    StaticRecipe("qdq-per-channel-minmax-fp32-first-36-convs", "minmax", fp32_first_convs=36),
)


def _concat(parts: list[ImageDataset]) -> ImageDataset:
    if len(parts) == 1:
        return parts[0]
    images = [p.image(i) for p in parts for i in range(len(p))]
    names = [p.name(i) for p in parts for i in range(len(p))]
    return ImageDataset(images, [y for p in parts for y in p.labels], " + ".join(p.source for p in parts), names)


@dataclass(frozen=True)
class ExportImages:
    """The images the export checks with: parity (the gate), calibration (int8 ranges) and tuning
    (the fallback margin; never the parity images, so the gate judges a threshold it did not choose)."""

    parity: ImageDataset
    calibration: ImageDataset
    tuning: ImageDataset


def parity_images(fitted: FittedImageClassifier, splits: ImageSplits | None) -> ExportImages:
    """Parity: test (else validation) sample; calibration: train sample; tuning (the guard's
    threshold): validation images when the test set is the parity set, topped up to
    ``tuning_samples`` with train images calibration did not use. Zero-shot bundles use the
    sample photos and augmented views of them."""
    opt, seed = fitted.spec.optimize, fitted.spec.train.seed
    if splits is not None:
        parity = sample(splits.test or splits.validation, opt.parity_samples, seed=seed)
        calibrated = sample_indices(splits.train, opt.calibration_samples, seed=seed + 1)
        calibration = splits.train.subset(calibrated) if len(calibrated) < len(splits.train) else splits.train
        # tuning: validation images (when the test set is the parity set), topped up with training
        # images calibration did not use, so that small validation sets still give a threshold
        rest = sorted(set(range(len(splits.train))) - set(calibrated))
        unused = splits.train.subset(rest, source=f"{splits.train.source}, not calibration")
        pools = [splits.validation, unused] if splits.test is not None else [unused]
        parts: list[ImageDataset] = []
        for k, pool in enumerate(pools):
            room = opt.tuning_samples - sum(len(part) for part in parts)
            if room > 0 and len(pool):
                parts.append(sample(pool, room, seed=seed + 2 + k))
        tuning = _concat(parts) if parts else calibration
        return ExportImages(parity, calibration, tuning)
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(a) for a in sample_photos().values()]
    aug = AugmentConfig(crop_scale_min=0.35, flip=True, jitter=0.2)
    views = 24

    def crops(n: int) -> list[Image.Image]:  # augmented views as images (so preprocess runs as usual)
        res = fitted.image.resize
        out = []
        for k in range(n):
            arr = augment(photos[k % len(photos)], fitted.image.__class__(resolution=res, resize=res), aug, rng)
            out.append(Image.fromarray(np.clip(arr.transpose(1, 2, 0) * 127.5 + 127.5, 0, 255).astype(np.uint8)))
        return out

    n_parity = max(len(photos), min(opt.parity_samples, len(photos) * (views + 1)))
    parity = ImageDataset(photos + crops(n_parity - len(photos)), ["?"] * n_parity, "sample photos and views")
    n_calib = min(opt.calibration_samples, views * len(photos)) if opt.quantize else 0
    calib = ImageDataset(crops(n_calib), ["?"] * n_calib, "sample photo views")
    n_tuning = min(opt.tuning_samples, views * len(photos)) if opt.quantize else 0
    tuning = ImageDataset(crops(n_tuning), ["?"] * n_tuning, "other sample photo views")
    return ExportImages(parity, calib, tuning)


def _session(path: Path) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _run(session: Any, pixels: np.ndarray, classes: int, batch_size: int = 64) -> tuple[np.ndarray, float]:
    """(probabilities, seconds per image of the runs alone, not the session's loading)."""
    if len(pixels) == 0:
        return np.zeros((0, classes), dtype=np.float32), 0.0
    start = time.perf_counter()
    probs = np.concatenate([session.run([OUTPUT], {INPUT: pixels[i:i + batch_size]})[0]
                            for i in range(0, len(pixels), batch_size)])
    return probs, (time.perf_counter() - start) / len(pixels)


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over preprocessed calibration images."""

    def __init__(self, pixels: np.ndarray, batch_size: int = 16) -> None:
        # equal-sized batches: the histogram calibrators stack per-batch outputs
        bs = min(batch_size, len(pixels))
        usable = len(pixels) // bs * bs
        self._batches = iter([pixels[i:i + bs] for i in range(0, usable, bs)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT: batch}


def _end_nodes(path: Path, last_convs: int) -> list[str]:
    """The first conv, the last ``last_convs`` convs (the last block and the 1x1 head conv) and
    the classifier: the layers whose quantization error reaches the probabilities most directly."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    convs = [n.name for n in graph.node if n.op_type == "Conv"]
    dense = [n.name for n in graph.node if n.op_type in ("Gemm", "MatMul")]
    return convs[:1] + (convs[-last_convs:] if last_convs > 0 else []) + dense[-1:]


def _leading_nodes(path: Path, first_convs: int) -> list[str]:
    """Every node that comes before the ``first_convs``-th conv in the (topologically sorted) graph."""
    import onnx

    nodes = onnx.load(str(path), load_external_data=False).graph.node
    conv_at = [i for i, n in enumerate(nodes) if n.op_type == "Conv"]
    stop = conv_at[first_convs] if first_convs < len(conv_at) else len(nodes)
    return [n.name for n in nodes[:stop]]


def _excluded(path: Path, recipe: StaticRecipe) -> list[str]:
    names = _end_nodes(path, recipe.fp32_last_convs) if recipe.fp32_last_convs >= 0 else []
    if recipe.fp32_first_convs > 0:
        names += [n for n in _leading_nodes(path, recipe.fp32_first_convs) if n not in names]
    return names


@dataclass(frozen=True)
class GateData:
    """Preprocessed pixels and their fp32 probabilities: the parity set and the tuning set."""

    parity: np.ndarray
    parity_fp32: np.ndarray
    tuning: np.ndarray
    tuning_fp32: np.ndarray
    fp32_seconds_per_image: float  # the fp32 graph's run time on the parity set, for the cost estimate


@dataclass(frozen=True)
class FallbackPolicy:
    """Margin-guarded int8 (:mod:`aiforge.tasks.image.fallback`); ``enabled=False`` judges int8 alone."""

    enabled: bool = True
    target: float = 0.998  # guarded agreement the margin threshold must reach on the tuning set
    max_rate: float = 0.25  # a recipe that would re-run more of the tuning set in fp32 is refused


def quantize_static_with_parity(fp32: Path, int8: Path, calibration: np.ndarray, data: GateData, *,
                                min_agreement: float, fallback: FallbackPolicy = FallbackPolicy()) -> dict[str, Any]:
    """Try each recipe of :data:`INT8_RECIPES`; keep the first that passes the gate.

    A recipe passes when its (guarded) top-1 agreement with fp32 on the parity set reaches
    ``min_agreement``. With the fallback enabled, the margin threshold is chosen on the tuning
    set first (:func:`aiforge.tasks.image.fallback.min_margin_for`), and a recipe that would send
    more than ``fallback.max_rate`` of the tuning set to fp32 is refused. Returns the recipe,
    its threshold, every try and the parity set's int8 probabilities (``int8_probs``).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    ref_parity, ref_tuning = data.parity_fp32.argmax(1), data.tuning_fp32.argmax(1)
    fp32_seconds, classes = data.fp32_seconds_per_image, data.parity_fp32.shape[1]
    tries: list[dict[str, Any]] = []
    int8_probs = np.zeros_like(data.parity_fp32)
    with tempfile.TemporaryDirectory(prefix="aiforge-quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        try:
            quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        except Exception:  # pre-processing only helps; quantize the graph as exported
            prepared = fp32
        for recipe in INT8_RECIPES:
            extra: dict[str, Any] = {"CalibMovingAverage": False}
            if recipe.method == "percentile":
                extra = {"CalibPercentile": 99.99}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quantize_static(str(prepared), str(int8), _Reader(calibration), quant_format=QuantFormat.QDQ,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                per_channel=recipe.per_channel, calibrate_method=methods[recipe.method],
                                nodes_to_exclude=_excluded(prepared, recipe),
                                extra_options=extra)
            session = _session(int8)
            int8_probs, int8_seconds = _run(session, data.parity, classes)
            tuning, _ = _run(session, data.tuning, classes)
            margin = (min_margin_for(tuning, data.tuning_fp32, fallback.target, limit=min_agreement)
                      if fallback.enabled else 0.0)
            served_tuning, fell_tuning = guarded(tuning, data.tuning_fp32, margin)
            served, fell = guarded(int8_probs, data.parity_fp32, margin)
            rate = float(fell_tuning.mean()) if len(fell_tuning) else 0.0
            row: dict[str, Any] = {
                "recipe": recipe.name,
                "top1_agreement": float((int8_probs.argmax(1) == ref_parity).mean()),
                "tuning_top1_agreement": float((tuning.argmax(1) == ref_tuning).mean()) if len(tuning) else None,
                "tuning_guarded_top1_agreement": float((served_tuning.argmax(1) == ref_tuning).mean())
                if len(tuning) else None,
                "min_margin": margin,
                "tuning_fallback_rate": rate,
                "guarded_top1_agreement": float((served.argmax(1) == ref_parity).mean()),
                "parity_fallback_rate": float(fell.mean()),
                "int8_ms_per_image": int8_seconds * 1000,
                "fp32_ms_per_image": fp32_seconds * 1000,
            }
            # compute only, batches of 64: a lower bound on the served cost (per-call overhead not counted)
            row["guarded_batch64_cost_vs_fp32"] = (int8_seconds + row["parity_fallback_rate"] * fp32_seconds) \
                / fp32_seconds
            row["ok"] = row["guarded_top1_agreement"] >= min_agreement and rate <= fallback.max_rate
            tries.append(row)
            if row["ok"]:
                return {"recipe": recipe.name, "min_margin": margin, "tries": tries, "ok": True,
                        "int8_probs": int8_probs}
    int8.unlink(missing_ok=True)
    return {"recipe": None, "min_margin": None, "tries": tries, "ok": False, "int8_probs": int8_probs}


def export_image_classifier(fitted: FittedImageClassifier, directory: Path, images: ExportImages) -> Parity:
    """Write the graphs into ``directory``; return the parity record.

    Raises:
        ExportError: export failed or the fp32 graph does not match PyTorch.
    """
    opt = fitted.spec.optimize
    directory.mkdir(parents=True, exist_ok=True)
    cpu_model = copy.deepcopy(fitted.model).cpu().eval()
    graph = ProbabilityGraph(cpu_model).eval()
    parity_data, calibration = images.parity, images.calibration
    pixels = preprocess_batch([parity_data.image(i) for i in range(len(parity_data))], fitted.image)
    exporter = export_onnx(graph, (torch.from_numpy(pixels[:2]),), directory / FP32_GRAPH, inputs=[INPUT],
                           outputs=[OUTPUT], dynamic={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}}, opset=17)
    with torch.inference_mode():
        torch_probs = np.concatenate([graph(torch.from_numpy(pixels[i:i + 64])).numpy()
                                      for i in range(0, len(pixels), 64)])
    fp32_session = _session(directory / FP32_GRAPH)
    fp32, fp32_seconds = _run(fp32_session, pixels, len(fitted.labels))
    max_diff = float(np.abs(fp32 - torch_probs).max())
    index = {y: i for i, y in enumerate(fitted.labels)}
    truth = np.array([index.get(y, -1) for y in parity_data.labels])
    labelled = bool((truth >= 0).any())

    def accuracy(probs: np.ndarray) -> float | None:
        return float((probs.argmax(1) == truth).mean()) if labelled else None

    if not max_diff < opt.max_prob_diff:  # written so that a NaN difference fails too
        raise ExportError(f"ONNX fp32 graph differs from PyTorch by {max_diff:.2e} in probability (limit "
                          f"{opt.max_prob_diff:.0e}); refusing to write a bundle that predicts differently.")
    details = {"source": parity_data.source, "exporter": exporter, "fp32_max_abs_prob_diff_limit": opt.max_prob_diff,
               "fp32_ok": True, "torch_accuracy": accuracy(torch_probs), "fp32_accuracy": accuracy(fp32)}
    int8 = None
    if opt.quantize:
        def preprocessed(ds: ImageDataset) -> np.ndarray:
            return preprocess_batch([ds.image(i) for i in range(len(ds))], fitted.image)

        tuning = preprocessed(images.tuning)
        data = GateData(pixels, fp32, tuning, _run(fp32_session, tuning, fp32.shape[1])[0], fp32_seconds)
        policy = FallbackPolicy(opt.int8_fallback, opt.fallback_agreement, opt.max_fallback_rate)
        quant = quantize_static_with_parity(directory / FP32_GRAPH, directory / INT8_GRAPH,
                                            preprocessed(calibration), data, min_agreement=opt.min_int8_agreement,
                                            fallback=policy)
        probs, last = quant["int8_probs"], quant["tries"][-1]
        int8_details: dict[str, Any] = {
            "method": "static (QDQ, calibrated)", "tries": quant["tries"],
            "calibration_samples": len(calibration), "calibration_source": calibration.source,
            "tuning_samples": len(images.tuning), "tuning_source": images.tuning.source,
            "fallback": policy.enabled, "fallback_target": policy.target, "max_fallback_rate": policy.max_rate,
            "min_margin": last["min_margin"], "guarded_top1_agreement": last["guarded_top1_agreement"],
            "parity_fallback_rate": last["parity_fallback_rate"],
            "guarded_accuracy": accuracy(guarded(probs, fp32, last["min_margin"])[0]),
            "vs_fp32_max_abs_prob_diff": float(np.abs(probs - fp32).max()),
        }
        if not quant["ok"]:
            int8_details["dropped"] = ("no recipe reached the top-1 agreement limit within the fallback budget; "
                                       "the bundle ships fp32 only")
        int8 = Int8Parity(ok=quant["ok"], top1_agreement=last["top1_agreement"], min_agreement=opt.min_int8_agreement,
                          accuracy=accuracy(probs), recipe=quant["recipe"], details=int8_details)
    # last, after quantization read the graph: the class-activation output the runtime's explain() reads
    details["cam"] = add_cam_output(directory / FP32_GRAPH, cpu_model.head)
    return Parity(samples=len(parity_data), max_abs_diff=max_diff, diff_key="fp32_vs_torch_max_abs_prob_diff",
                  int8=int8, details=details)


def image_pipeline(fitted: FittedImageClassifier, parity: Parity) -> dict[str, Any]:
    """``pipeline.json``: what ImageRuntime reads (graphs, preprocessing, default precision, int8 guard)."""
    int8 = parity.int8 if parity.int8 is not None and parity.int8.ok else None
    pipeline: dict[str, Any] = {
        "task": "image-classification", "labels": fitted.labels, "image": fitted.image.to_dict(),
        "input": INPUT, "output": OUTPUT, "graphs": {"fp32": FP32_GRAPH, **({"int8": INT8_GRAPH} if int8 else {})},
        "default_precision": "int8" if int8 else "fp32", "backbone": fitted.backbone.name,
        "top_k": fitted.spec.model.top_k,
    }
    if parity.details.get("cam"):
        pipeline["cam"] = {"graph": "fp32", "output": CAM_OUTPUT, "side": CAM_SIDE}
    if int8 is not None and int8.details["min_margin"] > 0:
        pipeline[FALLBACK_KEY] = {"graph": "fp32", "min_margin": int8.details["min_margin"]}
    return pipeline


def write_image_bundle(staged: Path, *, spec: ImageSpec, result: ImageFitResult) -> BundleParts:
    """Graphs, report, pipeline, metrics and card of a fitted image classifier (``export_bundle``'s writer).

    Raises:
        ExportError: export failed or the fp32 graph does not match PyTorch.
    """

    fitted, splits = result.fitted, result.splits
    parity = export_image_classifier(fitted, staged, parity_images(fitted, splits))
    metrics = {
        "mode": spec.effective_mode,
        "resolution": fitted.image.resolution,
        "validation": result.validation.to_dict() if result.validation else None,
        "test": result.test.to_dict() if result.test else None,
        "train_seconds": result.train_seconds,
        "history": result.history,
    }
    report = None
    if spec.report.enabled and splits is not None:
        report = write_report(fitted, splits.test or splits.validation, staged / "report.html",
                              metrics=result.test or result.validation, mistakes=spec.report.mistakes,
                              gradcam_count=spec.report.gradcam, baseline=result.baseline)
    card = image_card(spec, fitted, splits, metrics=metrics, parity=parity.to_dict(), report=report)
    scored = result.test or result.validation
    extra = {"backbone": fitted.backbone.record(), "mode": spec.effective_mode, "image": fitted.image.to_dict()}
    return BundleParts(pipeline=image_pipeline(fitted, parity), metrics=metrics, card=card, parity=parity,
                       headline=scored.headline() if scored else {}, extra=extra, baseline=result.baseline)

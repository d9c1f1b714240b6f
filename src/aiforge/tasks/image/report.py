"""The HTML evaluation report of an image classifier and its model card.

The report is one self-contained file (images embedded as base64 PNG): headline metrics,
the confusion matrix, the most confident mistakes as thumbnails, and Grad-CAM heat maps for
a sample of test images, so a person can see what the model looks at.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from aiforge.audit.baseline import BaselineReport
from aiforge.audit.metrics import Metrics
from aiforge.tasks.image.data import ImageSplits
from aiforge.tasks.image.dataset import ImageDataset
from aiforge.tasks.image.gradcam import gradcam, overlay
from aiforge.tasks.image.group_card import image_group_card
from aiforge.tasks.image.preprocess import preprocess_batch

if TYPE_CHECKING:
    from aiforge.tasks.image.fitted import FittedImageClassifier
    from aiforge.tasks.image.spec import ImageSpec


__all__ = ["image_card", "write_report"]


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}th{background:#f3f3f3}
.grid{display:flex;flex-wrap:wrap;gap:12px}.card{width:170px;font-size:12px}.card img{width:160px;height:160px;
image-rendering:pixelated;border:1px solid #ccc}.bad{color:#b00}.pair img{width:120px;height:120px}.pair{width:250px}"""


def _png(img: Image.Image, size: int = 160) -> str:
    buf = io.BytesIO()
    img.convert("RGB").resize((size, size), Image.Resampling.NEAREST if min(img.size) < 64
                              else Image.Resampling.BILINEAR).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _confusion(metrics: Metrics) -> str:
    labels = metrics.labels
    head = "".join(f"<th title='{html.escape(y)}'>{i}</th>" for i, y in enumerate(labels))
    rows = []
    for i, (y, row) in enumerate(zip(labels, metrics.confusion, strict=True)):
        total = max(sum(row), 1)
        cells = "".join(
            f"<td style='background:rgba({'40,120,200' if i == j else '200,40,40'},{v / total:.2f})'>{v}</td>"
            for j, v in enumerate(row))
        rows.append(f"<tr><th style='text-align:left'>{i} {html.escape(y)}</th>{cells}</tr>")
    return f"<table><tr><th>true \\ predicted</th>{head}</tr>{''.join(rows)}</table>"


def write_report(fitted: FittedImageClassifier, data: ImageDataset, path: Path, *, metrics: Metrics | None,
                 mistakes: int = 16, gradcam_count: int = 8, baseline: BaselineReport | None = None) -> dict[str, Any]:
    """Write the HTML report for ``data`` to ``path``; return what it shows (counts, file name).

    ``baseline`` (the fit's simple baselines) adds its section beside the metrics.
    """
    probs = fitted.predict_proba(data)
    index = {y: i for i, y in enumerate(fitted.labels)}
    truth = np.array([index[y] for y in data.labels])
    pred, conf = probs.argmax(1), probs.max(1)
    wrong = np.flatnonzero(pred != truth)
    worst = wrong[np.argsort(-conf[wrong])][:mistakes]
    cards = []
    for i in worst:
        cards.append(f"<div class='card'><img src='{_png(data.image(int(i)))}'><br>"
                     f"<b class='bad'>{html.escape(fitted.labels[pred[i]])}</b> {conf[i]:.2f}<br>"
                     f"true: {html.escape(data.labels[int(i)])}<br>"
                     f"<small>{html.escape(data.name(int(i)))}</small></div>")
    rng = np.random.default_rng(fitted.spec.train.seed)
    sample = sorted(rng.choice(len(data), min(gradcam_count, len(data)), replace=False).tolist())
    pairs = []
    if sample:
        pixels = preprocess_batch([data.image(i) for i in sample], fitted.image)
        cams = gradcam(fitted.model, pixels, [int(pred[i]) for i in sample])
        for i, cam in zip(sample, cams, strict=True):
            img = data.image(i)
            ok = "" if pred[i] == truth[i] else " class='bad'"
            pairs.append(f"<div class='card pair'><img src='{_png(img, 120)}'>"
                         f"<img src='{_png(overlay(img, cam), 120)}'>"
                         f"<br><b{ok}>{html.escape(fitted.labels[pred[i]])}</b> {conf[i]:.2f} · true "
                         f"{html.escape(data.labels[i])}</div>")
    head = ""
    if metrics is not None:
        head = (f"<p>{metrics.n} images · accuracy <b>{metrics.accuracy:.4f}</b> · macro-F1 "
                f"<b>{metrics.macro_f1:.4f}</b> · top-5 {metrics.top5_accuracy:.4f}</p>" + _confusion(metrics))
    body = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(fitted.spec.name)} report</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(fitted.spec.name)}: evaluation on "
            f"{html.escape(data.source)}</h1>{head}{baseline.html() if baseline else ''}"
            f"<h2>Most confident mistakes ({len(worst)} of {len(wrong)})</h2><div class='grid'>{''.join(cards)}</div>"
            f"<h2>Grad-CAM: where the predicted class's evidence lies ({len(pairs)} random images)</h2>"
            f"<p>Left: the image; right: the heat map of the last convolution's evidence for the predicted "
            f"class (red = strong).</p><div class='grid'>{''.join(pairs)}</div></body></html>")
    path.write_text(body, encoding="utf-8")
    return {"file": path.name, "mistakes_shown": len(worst), "mistakes_total": len(wrong),
            "gradcam_shown": len(pairs), "source": data.source}


def image_card(spec: ImageSpec, fitted: FittedImageClassifier, splits: ImageSplits | None, *,
               metrics: dict[str, Any], parity: dict[str, Any], report: dict[str, Any] | None) -> str:
    """The model card (markdown)."""
    mode = spec.effective_mode
    b = fitted.backbone
    lines = [f"# {spec.name}", "", "## Intended use", "",
             (f"Classifies photos into the {len(fitted.labels)} ImageNet-1k classes (the pre-trained "
              f"{b.name} classifier, no training)." if mode == "zero-shot" else
              f"Classifies images into {len(fitted.labels)} classes: {', '.join(fitted.labels[:20])}"
              f"{' …' if len(fitted.labels) > 20 else ''}. Trained in {mode} mode on {b.name}."),
             "", "## Model", "", f"- Backbone: {b.name} ({b.licence}); {b.provenance}",
             f"- Mode: {mode}; input {fitted.image.resolution}x{fitted.image.resolution} px (resize shorter side "
             f"to {fitted.image.resize}, centre crop, scale to [-1, 1])", ""]
    if splits is not None:
        lines += ["## Data", "", f"- train: {splits.train.source} ({len(splits.train)} images)",
                  f"- validation: {splits.validation.source} ({len(splits.validation)} images)",
                  f"- test: {splits.test.source} ({len(splits.test)} images)" if splits.test else "- test: none", ""]
    lines += ["## Metrics", ""]
    for part in ("validation", "test"):
        m = metrics.get(part)
        if m:
            lines.append(f"- {part}: accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f} ({m['n']} images)")
    if mode == "zero-shot":
        lines.append("- ImageNet-1k top-1 75.1% as published for EfficientNet-Lite0 (not re-measured here)")
    lines += ["", "## Export parity", "",
              f"- ONNX fp32 vs PyTorch max |Δp| {parity['fp32_vs_torch_max_abs_prob_diff']:.2e} "
              f"on {parity['samples']} images ({parity['source']})"]
    if "int8_ok" in parity:
        lines.append(f"- int8 static ({parity['int8_recipe'] or 'no recipe passed'}): top-1 agreement with fp32 "
                     f"{parity['int8_top1_agreement']:.4f} alone (limit {parity['int8_min_agreement']}); "
                     f"{'shipped' if parity['int8_ok'] else 'dropped'}")
        if parity.get("int8_ok") and parity.get("int8_min_margin"):
            lines.append(f"- guarded int8: items whose int8 top-1 margin is under {parity['int8_min_margin']:.3f} "
                         f"are re-run in fp32 ({parity['int8_parity_fallback_rate']:.1%} of the parity images); "
                         f"top-1 agreement {parity['int8_guarded_top1_agreement']:.4f}. The threshold was chosen "
                         f"on {parity['int8_tuning_samples']} other images; serve with precision int8-only to "
                         "turn the guard off")
    if report:
        lines += ["", "## Report", "", f"`{report['file']}` in this bundle: {report['mistakes_shown']} most confident "
                  f"mistakes and {report['gradcam_shown']} Grad-CAM heat maps."]
    lines += ["", "## Limitations", "", "Accuracy holds for images like the training data; photos of other kinds, "
              "sizes or lighting may be misclassified with high confidence. Check the report's mistakes before use."]
    return "\n".join(lines) + "\n" + image_group_card(spec, fitted, splits)

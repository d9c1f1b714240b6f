"""``aiforge optimize`` for text classifiers: the parity texts and the graph recipes to try.

Recipes, in order: the bundle's fp32 graph; its shipped int8 graph (if any); the fused fp32 graph
(:mod:`aiforge.optimize.fuse`: attention, SkipLayerNorm, BiasGelu); the fused graph quantized with
each int8 recipe of :mod:`aiforge.optimize.quantize` (per-row activation scales; the smoothed recipe fits
its factors on training texts of the bundle's spec, and is left out when those cannot be read). Recipes
below the agreement gate are measured and shown but never chosen.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiforge.bundle.format import BundleManifest, read_manifest
from aiforge.errors import AiforgeError, DataError
from aiforge.optimize.fuse import backbone_heads, fuse_transformer
from aiforge.optimize.hooks import Candidate
from aiforge.optimize.quantize import RECIPES, quantize_recipe
from aiforge.tasks.text.data import load_text_dataset, load_text_splits
from aiforge.tasks.text.parity import calibration_texts, gate_size, parity_sample
from aiforge.tasks.text.spec import TextSpec

__all__ = ["HOOKS", "TextOptimize"]

def _spec(bundle: Path, manifest: BundleManifest) -> TextSpec:
    try:
        return TextSpec.model_validate(manifest.extra.get("spec") or {})
    except ValueError as exc:
        raise AiforgeError(f"{bundle}: the manifest's spec does not validate ({exc}); re-export the bundle.") from exc


def _calibration(bundle: Path, pipeline: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Feeds of the training texts the export calibrates on; None when the spec's files cannot be read."""
    from tokenizers import Tokenizer

    from aiforge.bundle.tokens import encode_batches

    try:
        spec = _spec(bundle, read_manifest(bundle, verify=False))
        oos = spec.model.out_of_scope
        train = load_text_splits(spec.data, seed=spec.train.seed,
                                 out_of_scope=oos.label if oos is not None else None).train
        tok = Tokenizer.from_file(str(bundle / pipeline["tokenizer"]))
    except (AiforgeError, OSError, ValueError, KeyError):
        return None
    tok.no_padding()
    tok.enable_truncation(max_length=int(pipeline["max_length"]))
    texts = calibration_texts(list(train.texts), seed=spec.train.seed)
    return [{"input_ids": ids, "attention_mask": mask} for _, ids, mask in encode_batches(tok, texts, 16)]


class TextOptimize:
    """The text kind's :class:`aiforge.optimize.hooks.OptimizeHooks`."""

    def parity_items(self, *, bundle: Path, manifest: BundleManifest, data: Path | None, limit: int) -> list[Any]:
        """The export's int8 gate texts: the test file (else the validation split), sampled as the export did."""
        spec = _spec(bundle, manifest)
        try:
            if data is not None:
                ds = load_text_dataset(data, text_column=spec.data.text_column, label_column=spec.data.label_column,
                                       fmt="auto")
            else:
                oos = spec.model.out_of_scope
                splits = load_text_splits(spec.data, seed=spec.train.seed,
                                          out_of_scope=oos.label if oos is not None else None)
                ds = splits.test or splits.validation
        except (DataError, OSError) as exc:
            raise AiforgeError(f"{bundle}: cannot read the bundle's parity data ({exc}); pass --data FILE with the "
                               f"columns {spec.data.text_column!r} and {spec.data.label_column!r}.") from exc
        n = min(gate_size(spec.optimize.parity_samples), limit)
        return list(parity_sample(ds, n, seed=spec.train.seed).texts)

    def candidates(self, *, bundle: Path, pipeline: dict[str, Any], work: Path) -> Iterator[Candidate]:
        """fp32, the shipped int8, fused fp32, fused int8 per recipe (built as the sweep reaches them)."""
        graphs = pipeline["graphs"]
        yield Candidate("fp32", "fp32")
        if "int8" in graphs:
            yield Candidate("int8 (shipped)", "int8")
        heads = backbone_heads(str(pipeline.get("backbone")))
        if heads is None:
            return
        fused = work / "model.fused.onnx"
        record = fuse_transformer(bundle / graphs["fp32"], fused, num_heads=heads)
        if record.attention == 0:
            return  # not a graph the fuser knows
        yield Candidate("fused fp32", "fp32", {"fp32": fused}, {"fused": record.to_dict()})
        calibration = _calibration(bundle, pipeline) if any(r.needs_calibration for r in RECIPES) else None
        for recipe in RECIPES:
            if recipe.needs_calibration and calibration is None:
                continue
            out = work / f"model.fused.int8.{recipe.name}.onnx"
            quantize_recipe(fused, out, recipe, calibration=calibration if recipe.needs_calibration else None)
            yield Candidate(f"fused int8 {recipe.name}", "int8", {"int8": out},
                            {"fused": record.to_dict(), "int8_recipe": recipe.name})


HOOKS = TextOptimize()

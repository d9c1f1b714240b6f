"""``aiforge optimize`` for image classifiers: the parity images and the precisions to try.

The recipes are the graphs the bundle already has: fp32, the guarded int8 (items under the int8
margin re-run in fp32) and int8-only. Its static int8 graph was calibrated at export on training
images the bundle does not keep, so the sweep does not build new int8 graphs for images.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiforge.bundle.format import BundleManifest
from aiforge.errors import AiforgeError, DataError
from aiforge.optimize.hooks import Candidate
from aiforge.tasks.image.data import load_image_dataset, load_image_splits
from aiforge.tasks.image.parity import sample
from aiforge.tasks.image.spec import ImageSpec

__all__ = ["HOOKS", "ImageOptimize"]


class ImageOptimize:
    """The image kind's :class:`aiforge.optimize.hooks.OptimizeHooks`."""

    def parity_items(self, *, bundle: Path, manifest: BundleManifest, data: Path | None, limit: int) -> list[Any]:
        """The export's parity images (test, else validation, sampled as the export did) as PNG bytes."""
        try:
            spec = ImageSpec.model_validate(manifest.extra.get("spec") or {})
        except ValueError as exc:
            raise AiforgeError(f"{bundle}: the manifest's spec does not validate ({exc}); re-export the bundle.") \
                from exc
        try:
            if data is not None:
                ds = load_image_dataset(data)
            elif spec.data is None:
                raise DataError("a zero-shot bundle keeps no data files")
            else:
                splits = load_image_splits(spec.data, seed=spec.train.seed)
                ds = splits.test or splits.validation
        except (DataError, OSError) as exc:
            raise AiforgeError(f"{bundle}: cannot read the bundle's parity images ({exc}); pass --data FOLDER "
                               "(one sub-folder per class).") from exc
        ds = sample(ds, min(spec.optimize.parity_samples, limit), seed=spec.train.seed)
        items = []
        for i in range(len(ds)):
            buf = io.BytesIO()
            ds.image(i).save(buf, format="PNG")
            items.append(buf.getvalue())
        return items

    def candidates(self, *, bundle: Path, pipeline: dict[str, Any], work: Path) -> Iterator[Candidate]:
        """fp32, then (when the bundle has an int8 graph) guarded int8 and int8-only."""
        yield Candidate("fp32", "fp32")
        if "int8" in pipeline["graphs"]:
            if pipeline.get("int8_fallback"):
                yield Candidate("int8 guarded", "int8")
            yield Candidate("int8-only", "int8-only")


HOOKS = ImageOptimize()

"""ImageRuntime: an image-classification bundle served without PyTorch.

Pillow + numpy + onnxruntime only. Decoding is defensive (:mod:`aiforge.tasks.image.decode`) and
preprocessing is :func:`aiforge.tasks.image.preprocess.preprocess`, the code training used.

Items:
- from a server (``parse_items``, ``v2_inputs``): base64 strings (or data URLs), or raw
  bytes from a multipart upload; each is decoded and preprocessed at parse time, so a bad
  image fails its own request with a 4xx before it can reach a batch;
- from Python or the CLI (``predict``): file paths, bytes, Pillow images or pixel arrays.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aiforge.bundle.format import BundleManifest
from aiforge.bundle.runtime import ItemLimits, Runtime, onnx_session, session_settings
from aiforge.errors import BundleError, DataError, InputError
from aiforge.tasks.image.cam import CAM_SIDE, cam_pixels, class_map, heatmap_png
from aiforge.tasks.image.decode import decode_base64, decode_image, open_image_file
from aiforge.tasks.image.fallback import FALLBACK_KEY, top2_margin
from aiforge.tasks.image.preprocess import ImageConfig, preprocess

if TYPE_CHECKING:
    from aiforge.audit.metrics import Metrics


__all__ = ["Explanation", "ImageRuntime"]


_DEFAULT_LIMITS = ItemLimits()


@dataclass(frozen=True)
class Explanation:
    """One image's class-activation map: the class it explains, the map on its grid and as a PNG."""

    label: str
    score: float
    explained: str
    grid: list[int]  # [height, width] of the feature map (the image's aspect, about 7 cells along the longer side)
    map: list[list[float]]  # values in [0, 1], row by row
    png: str  # data:image/png;base64,... jet-coloured, of the image's aspect
    width: int
    height: int
    image: str = ""  # the file name or images[i], where a route names it

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


class ImageRuntime(Runtime):
    """An image-classification bundle: image config + one ONNX graph (fp32 or int8).

    Precision ``int8`` (the default when the bundle ships it) is *guarded* when the bundle
    records a fallback margin: items whose int8 top-1 margin falls under it are re-run through
    the fp32 graph (:mod:`aiforge.tasks.image.fallback`). ``int8-only`` turns the guard off.
    """

    task = "image-classification"

    def __init__(self, path: Path, manifest: BundleManifest, *, precision: str = "auto",
                 threads: int | None = None, batch_size: int = 32) -> None:
        super().__init__(path, manifest)
        self.batch_size = batch_size
        try:
            graphs: dict[str, str] = self.pipeline["graphs"]
            self.labels = list(self.pipeline["labels"])
            self.image = ImageConfig.from_dict(self.pipeline["image"])
            self.top_k = int(self.pipeline.get("top_k", 5))
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{path}: pipeline.json is incomplete ({exc}).") from exc
        chosen = self.pipeline.get("default_precision", "fp32") if precision == "auto" else precision
        graph = "int8" if chosen == "int8-only" else chosen
        if graph not in graphs:
            raise BundleError(f"{path}: no {graph!r} graph in this bundle; it has {sorted(graphs)}.")
        self.precision = chosen
        self._input = self.pipeline.get("input", "pixels")
        self._output = self.pipeline.get("output", "probabilities")
        self.min_margin = 0.0
        self._fallback = None
        guard = self.pipeline.get(FALLBACK_KEY) if chosen == "int8" else None
        self.session = onnx_session(path / graphs[graph], **session_settings(manifest, threads))
        if guard:
            try:
                self.min_margin = float(guard["min_margin"])
                # the few re-run rows go on the calling thread: a second thread pool would fight the
                # int8 session's (still spinning) threads for the same cores (up to 1.6x slower in a one-off check)
                self._fallback = onnx_session(path / graphs[guard["graph"]], threads=1)
            except (KeyError, TypeError, ValueError) as exc:
                raise BundleError(f"{path}: pipeline.json {FALLBACK_KEY} is incomplete ({exc}).") from exc
        self._lock = threading.Lock()
        self._cam = self.pipeline.get("cam")
        self._cam_session: Any = None
        self.items_seen = 0
        self.fallback_items = 0

    @classmethod
    def open(cls, path: Path, manifest: BundleManifest, *, precision: str = "auto",
             threads: int | None = None) -> ImageRuntime:
        return cls(path, manifest, precision=precision, threads=threads)

    # --- server side -----------------------------------------------------------------

    def decode(self, data: bytes, where: str, limits: ItemLimits = _DEFAULT_LIMITS) -> np.ndarray:
        """Encoded image bytes -> the model's input array (3, r, r).

        Raises:
            InputError: the bytes break a limit or are not a readable JPEG/PNG/WebP image.
        """
        img = decode_image(data, where=where, max_bytes=limits.max_image_bytes, max_pixels=limits.max_image_pixels)
        return preprocess(img, self.image, where=where)

    def parse_items(self, items: list[Any], where: str, limits: ItemLimits) -> list[Any]:
        out = []
        for i, item in enumerate(items):
            at = f"{where}[{i}]"
            if isinstance(item, bytes | bytearray):
                data = bytes(item)
            elif isinstance(item, str):
                data = decode_base64(item, where=at, max_bytes=limits.max_image_bytes)
            else:
                raise InputError(f"{at}: expected a base64-encoded JPEG/PNG/WebP image string, "
                                 f"got {type(item).__name__}")
            out.append(self.decode(data, at, limits))
        return out

    def v2_inputs(self, tensors: list[dict[str, Any]]) -> list[Any]:
        """Base64 strings from one BYTES tensor of shape [n] (or [n, 1]) of encoded images."""
        if len(tensors) != 1:
            raise InputError(f"expected one input tensor of encoded images, got {len(tensors)}")
        tensor = tensors[0]
        at = f"inputs[0] ({tensor.get('name')!r})"
        if str(tensor.get("datatype", "")).upper() != "BYTES":
            raise InputError(f"{at}: datatype must be BYTES (base64-encoded JPEG/PNG/WebP images), "
                             f"got {tensor.get('datatype')!r}")
        shape, data = tensor.get("shape") or [], tensor.get("data") or []
        if not all(isinstance(d, int) and d >= 0 for d in shape) or math.prod(shape) != len(data):
            raise InputError(f"{at}: shape {shape} does not match {len(data)} data elements")
        params = tensor.get("parameters") or {}
        encoding = params.get("content_type") or params.get("encoding") or "base64"
        if encoding not in ("base64", "b64"):
            raise InputError(f"{at}: image data must be base64 strings (parameters.content_type 'base64'), "
                             f"got {encoding!r}")
        return list(data)

    def v2_metadata_inputs(self) -> list[dict[str, Any]]:
        return [{"name": "image", "datatype": "BYTES", "shape": [-1],
                 "parameters": {"content_type": "base64", "formats": ["jpeg", "png", "webp"]}}]

    def predict_proba(self, items: list[Any]) -> np.ndarray:
        """Probabilities, one row per item, columns in ``labels`` order.

        Items are preprocessed arrays (from ``parse_items``), file paths, bytes, Pillow images
        or HxW(x3) uint8 pixel arrays.

        Raises:
            InputError: an item is of an unknown kind or not a readable image.
            DataError: a file path does not exist or is not a readable image.
        """
        if not isinstance(items, list | tuple):
            raise InputError("predict() takes a list of images (paths, bytes, Pillow images or arrays).")
        out = np.zeros((len(items), len(self.labels)), dtype=np.float32)
        if not items:
            return out
        pixels = np.stack([self._pixels(item, i) for i, item in enumerate(items)])
        fell = 0
        for start in range(0, len(pixels), self.batch_size):
            chunk = pixels[start:start + self.batch_size]
            probs = self.session.run([self._output], {self._input: chunk})[0]
            if self._fallback is not None:
                low = np.flatnonzero(top2_margin(probs) < self.min_margin)
                if low.size:
                    probs[low] = self._fallback.run([self._output], {self._input: chunk[low]})[0]
                    fell += int(low.size)
            out[start:start + len(chunk)] = probs
        with self._lock:
            self.items_seen += len(items)
            self.fallback_items += fell
        return out

    @property
    def explains(self) -> bool:
        """Whether the bundle's fp32 graph carries the class-activation output (:mod:`aiforge.tasks.image.cam`)."""
        return isinstance(self._cam, dict)

    def explain(self, image: Any, *, label: str | None = None, where: str = "image") -> Explanation:
        """The class-activation map of ``image`` (a Pillow image, path or encoded bytes) for ``label``
        (default: the predicted label), torch-free.

        Raises:
            InputError: the bundle has no map output, the label is unknown or the image unreadable.
        """
        from PIL import Image

        if not isinstance(self._cam, dict):
            raise InputError(f"model {self.name!r} has no class-activation output; re-export it with this aiforge "
                             "version to get maps")
        if isinstance(image, bytes | bytearray):
            img = decode_image(bytes(image), where=where, max_bytes=_DEFAULT_LIMITS.max_image_bytes,
                               max_pixels=_DEFAULT_LIMITS.max_image_pixels)
        elif isinstance(image, str | Path):
            img = open_image_file(Path(image))
        elif isinstance(image, Image.Image):
            img = image
        else:
            raise InputError(f"{where}: expected an image (Pillow image, path or bytes), got {type(image).__name__}")
        probs = self.predict_proba([img])[0]
        top = int(np.argmax(probs))
        if label is not None and label not in self.labels:
            raise InputError(f"label: {label!r} is not one of this model's labels ({len(self.labels)} labels)")
        cls = self.labels.index(label) if label is not None else top
        with self._lock:
            if self._cam_session is None:
                graphs: dict[str, str] = self.pipeline["graphs"]
                self._cam_session = self.session if self.precision == "fp32" else onnx_session(
                    self.path / graphs[self._cam.get("graph", "fp32")], threads=1)
        pixels = cam_pixels(img, self.image, side=int(self._cam.get("side", CAM_SIDE)), where=where)[None]
        cam = self._cam_session.run([self._cam.get("output", "cam")], {self._input: pixels})[0][0]
        m = class_map(cam, cls)
        png, w, h = heatmap_png(m, width=img.size[0], height=img.size[1])
        return Explanation(self.labels[top], float(probs[top]), self.labels[cls], list(m.shape),
                           [[round(float(v), 4) for v in row] for row in m], png, w, h)

    def counters(self) -> dict[str, int]:
        """Items predicted since load, and how many of them the guard re-ran in fp32."""
        with self._lock:
            return {"items": self.items_seen, "fp32_fallback_items": self.fallback_items}

    def _pixels(self, item: Any, i: int) -> np.ndarray:
        from PIL import Image

        r = self.image.resolution
        if isinstance(item, np.ndarray) and item.shape == (3, r, r) and item.dtype == np.float32:
            return item
        if isinstance(item, str | Path):
            return preprocess(open_image_file(Path(item)), self.image)
        if isinstance(item, bytes | bytearray):
            return self.decode(bytes(item), f"items[{i}]")
        if isinstance(item, Image.Image):
            return preprocess(item, self.image)
        if isinstance(item, np.ndarray) and item.dtype == np.uint8 and item.ndim in (2, 3):
            return preprocess(Image.fromarray(item), self.image)
        raise InputError(f"items[{i}]: expected an image path, bytes, a Pillow image or a uint8 array, "
                         f"got {type(item).__name__}")

    def warmup(self) -> None:
        r = self.image.resolution
        for session in (self.session, self._fallback):
            for n in (1, 4):
                if session is not None:
                    session.run([self._output], {self._input: np.zeros((n, 3, r, r), np.float32)})

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        if len(self.labels) > 50:
            info["labels"] = [*self.labels[:10], f"… {len(self.labels) - 10} more"]
        info["image"] = self.image.to_dict()
        if self._fallback is not None:
            info["int8_fallback"] = {"min_margin": self.min_margin, **self.counters()}
        return info

    # --- CLI side --------------------------------------------------------------------

    def _listed(self, path: Path, columns: Mapping[str, str] | None) -> tuple[list[Path], list[str] | None]:
        # lazy: the data readers (pandas, the spec) are for the CLI's verbs, not the server's start-up
        from aiforge.tasks.image.data import IMAGE_SUFFIXES, _read_csv, _read_folder

        if path.is_dir():
            subdirs = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
            if subdirs:
                paths, labels = _read_folder(path)
                return paths, labels
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            return files, None
        if path.suffix.lower() == ".csv":
            cols = columns or {}
            try:
                paths, labels = _read_csv(path, cols.get("path", "path"), cols.get("label", "label"), True)
                return paths, labels
            except DataError:
                paths, _ = _read_csv(path, cols.get("path", "path"), "", False)
                return paths, None
        if path.suffix.lower() == ".txt":
            if not path.is_file():
                raise DataError(f"{path}: input file not found.")
            lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
            return [Path(ln) if Path(ln).is_absolute() else path.parent / ln for ln in lines], None
        if path.is_file():
            return [path], None
        raise DataError(f"{path}: not found; give image files, a folder of images, a CSV (path[, label]) or a TXT "
                        "of image paths.")

    def predict_file(self, path: str | Path, *, columns: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        paths, _ = self._listed(Path(path), columns)
        if not paths:
            raise DataError(f"{path}: no images to predict.")
        preds = []
        for start in range(0, len(paths), 64):
            chunk = paths[start:start + 64]
            preds += [{"image": str(p), **pred.to_dict()} for p, pred in zip(chunk, self.predict(list(chunk)),
                                                                             strict=True)]
        return preds

    def evaluate_file(self, path: str | Path, *, columns: Mapping[str, str] | None = None) -> Metrics:
        # lazy: metrics are for the CLI's verbs, not the server's start-up
        from aiforge.audit.metrics import classification_metrics

        paths, labels = self._listed(Path(path), columns)
        if labels is None:
            raise DataError(f"{path}: evaluation needs labels: a folder with one sub-folder per class or a CSV with "
                            "path and label columns.")
        unknown = sorted(set(labels) - set(self.labels))
        if unknown:
            raise DataError(f"{path}: labels never seen in training: {unknown[:10]}.")
        probs = np.concatenate([self.predict_proba(list(paths[i:i + 64])) for i in range(0, len(paths), 64)])
        return classification_metrics(labels, probs, self.labels)

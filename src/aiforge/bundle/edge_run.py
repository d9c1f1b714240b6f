"""Run an aiforge bundle with onnxruntime, numpy and tokenizers only (Pillow for images).

    python run.py "where is my card?" ["another text" ...]     one JSON line per item
    python run.py photo.png [more.jpg ...]                      (image bundles)
    python run.py --serve [--host 127.0.0.1] [--port 8000]      POST /predict {"inputs": [...]}

This file is the runner of an edge package (``aiforge export NAME --edge -o DIR``): it does not
import aiforge. At start it checks the bundle as aiforge does: the manifest's own digest, then
every file's size and sha256, and that no file is unlisted; it refuses to run otherwise. The
preprocessing is the same arithmetic as aiforge's runtime, so it predicts what the server predicts.
"""

from __future__ import annotations

import argparse
import base64
import ctypes
import ctypes.util
import hashlib
import io
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def _small_address_space() -> None:
    """Keep the process inside a 256 MB address-space cap (``ulimit -v``, ``prlimit --as``).

    Most of what such a cap counts is reserved, not used: every thread's malloc arena reserves 64 MB
    and each OpenBLAS and rayon (tokenizers) worker thread its own buffers and 8 MB stack. So: one
    malloc arena, numpy's BLAS and tokenizers without worker threads (the runner tokenizes one
    request at a time; onnxruntime has its own pool); settings already in the environment win.
    """
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    libc = ctypes.util.find_library("c")
    if libc and sys.platform.startswith("linux") and "MALLOC_ARENA_MAX" not in os.environ:
        m_arena_max = -8  # glibc's mallopt(M_ARENA_MAX, n)
        ctypes.CDLL(libc).mallopt(m_arena_max, 1)


_small_address_space()  # before numpy and onnxruntime load (and start threads)

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

HERE = Path(__file__).resolve().parent
BUNDLE = HERE / "bundle"
MAX_TEXT_CHARS = 10_000
MAX_IMAGE_BYTES = 8 << 20
MAX_IMAGE_PIXELS = 40_000_000
MAX_ASPECT_RATIO = 20
MAX_INPUTS = 256


class EdgeError(Exception):
    """A bundle that fails its checks, or an input the model cannot take."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(folder: Path, needed: list[str]) -> dict[str, Any]:
    """The manifest, once its digest and every file in ``folder`` check out.

    Graphs the package leaves out may be listed in the manifest but absent; every file present must
    be listed with its size and sha256, and every file in ``needed`` must be present.
    """
    raw: dict[str, Any] = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    body = {k: v for k, v in raw.items() if k not in ("digest", "signature")}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    if raw.get("digest") != "sha256:" + hashlib.sha256(canonical).hexdigest():
        raise EdgeError("bundle/manifest.json does not match its own digest; rebuild the edge package")
    files: dict[str, dict[str, Any]] = raw["files"]
    present = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir())
    for rel in present:
        if rel == "manifest.json":
            continue
        info = files.get(rel)
        path = folder / rel
        if info is None or path.is_symlink():
            raise EdgeError(f"bundle/{rel} is not listed in the manifest (or is a link); remove it")
        if path.stat().st_size != int(info["size"]) or _sha256(path) != info["sha256"]:
            raise EdgeError(f"bundle/{rel} does not match its sha256 in the manifest; the file was changed")
    missing = [rel for rel in needed if rel not in present]
    if missing:
        raise EdgeError(f"bundle lacks {missing}; rebuild the edge package")
    return raw


def _session(path: Path, threads: int | None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # small devices: no arena that keeps (and over-reserves) the largest batch's buffers, no
    # pre-planned pattern of them, no idle worker spinning on a single core
    options.enable_cpu_mem_arena = False
    options.enable_mem_pattern = False
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class Model:
    """The bundle's default graph, its tokenizer or image settings, and its labels."""

    def __init__(self, threads: int | None = None) -> None:
        edge = json.loads((HERE / "edge.json").read_text(encoding="utf-8"))
        self.manifest = verify(BUNDLE, list(edge["files"]))
        self.pipeline: dict[str, Any] = json.loads((BUNDLE / "pipeline.json").read_text(encoding="utf-8"))
        self.task: str = self.pipeline["task"]
        self.labels: list[str] = list(self.pipeline["labels"])
        self.output: str = self.pipeline.get("output", "probabilities")
        self.session = _session(BUNDLE / edge["graph"], threads)
        self.fallback = None
        self.min_margin = 0.0
        guard = edge.get("fallback")
        if guard:
            self.fallback = _session(BUNDLE / guard["graph"], 1)
            self.min_margin = float(guard["min_margin"])
        if self.task == "text-classification":
            from tokenizers import Tokenizer

            self.tokenizer = Tokenizer.from_file(str(BUNDLE / self.pipeline.get("tokenizer", "tokenizer.json")))
            self.tokenizer.no_padding()
            self.tokenizer.enable_truncation(max_length=int(self.pipeline["max_length"]))
        elif self.task != "image-classification":
            raise EdgeError(f"this runner serves text and image classifiers, not {self.task!r}")

    # --- inputs ----------------------------------------------------------------------------

    def item(self, value: Any, where: str) -> Any:
        """A text (str) or an image (bytes, or a base64 string in JSON), checked."""
        if self.task == "text-classification":
            if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT_CHARS:
                raise EdgeError(f"{where}: expected a non-empty text of at most {MAX_TEXT_CHARS} characters")
            return value
        if isinstance(value, str):
            try:
                value = base64.b64decode(value, validate=True)
            except ValueError as exc:
                raise EdgeError(f"{where}: expected a base64-encoded JPEG/PNG/WebP image") from exc
        if not isinstance(value, bytes):
            raise EdgeError(f"{where}: expected an image")
        return self._pixels(value, where)

    def _pixels(self, data: bytes, where: str) -> np.ndarray:
        from PIL import Image, ImageOps

        if not data or len(data) > MAX_IMAGE_BYTES:
            raise EdgeError(f"{where}: expected 1 to {MAX_IMAGE_BYTES} bytes of image, got {len(data)}")
        fmt = ("JPEG" if data[:3] == b"\xff\xd8\xff" else "PNG" if data[:8] == b"\x89PNG\r\n\x1a\n"
               else "WEBP" if data[:4] == b"RIFF" and data[8:12] == b"WEBP" else None)
        if fmt is None:
            raise EdgeError(f"{where}: not a JPEG, PNG or WebP image")
        try:
            img: Any = Image.open(io.BytesIO(data), formats=[fmt])
            w, h = img.size
            if w <= 0 or h <= 0 or w * h > MAX_IMAGE_PIXELS or max(w, h) > MAX_ASPECT_RATIO * min(w, h):
                raise EdgeError(f"{where}: image of {w}x{h} pixels is empty, too large or too elongated")
            img.load()
            img = ImageOps.exif_transpose(img) or img
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise EdgeError(f"{where}: unreadable image ({exc})") from exc
        cfg = self.pipeline["image"]
        res, resize = int(cfg["resolution"]), int(cfg["resize"])
        w, h = img.size
        scale = resize / min(w, h)
        nw, nh = max(res, round(w * scale)), max(res, round(h * scale))
        img = _rgb(img)
        if (nw, nh) != (w, h):
            method = Image.Resampling.BICUBIC if cfg.get("interpolation") == "bicubic" else Image.Resampling.BILINEAR
            img = img.resize((nw, nh), method)
        left, top = (nw - res) // 2, (nh - res) // 2
        img = img.crop((left, top, left + res, top + res))
        arr = np.asarray(img, dtype=np.float32)
        return np.ascontiguousarray(((arr - float(cfg["mean"])) / float(cfg["std"])).transpose(2, 0, 1))

    # --- prediction ------------------------------------------------------------------------

    def proba(self, items: list[Any]) -> np.ndarray:
        """Probabilities, one row per checked item."""
        if not items:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        if self.task == "text-classification":
            seqs = [e.ids for e in self.tokenizer.encode_batch(items)]
            ids = np.zeros((len(seqs), max(len(s) for s in seqs)), dtype=np.int64)
            mask = np.zeros_like(ids)
            for row, seq in enumerate(seqs):
                ids[row, :len(seq)] = seq
                mask[row, :len(seq)] = 1
            out: np.ndarray = self.session.run([self.output], {"input_ids": ids, "attention_mask": mask})[0]
            return out
        pixels = np.stack(items)
        name = self.pipeline.get("input", "pixels")
        probs: np.ndarray = self.session.run([self.output], {name: pixels})[0]
        if self.fallback is not None and probs.shape[1] > 1:  # the int8 guard: low top-1 margins re-run in fp32
            top = np.partition(probs, -2, axis=1)[:, -2:]
            low = np.flatnonzero(top[:, 1] - top[:, 0] < self.min_margin)
            if low.size:
                probs[low] = self.fallback.run([self.output], {name: pixels[low]})[0]
        return probs

    def predict(self, items: list[Any]) -> list[dict[str, Any]]:
        """The top label, its probability and the five most likely labels per item."""
        out = []
        for row in self.proba(items):
            order = np.argsort(-row)
            out.append({"label": self.labels[int(order[0])], "score": float(row[order[0]]),
                        "scores": {self.labels[int(i)]: float(row[i]) for i in order[:5]}})
        return out


def _rgb(img: Any) -> Any:
    from PIL import Image

    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        return Image.fromarray((arr / top * 255).round().astype(np.uint8), "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return img.convert("RGB")


def serve(model: Model, host: str, port: int) -> None:
    """``POST /predict`` ``{"inputs": [...]}`` -> ``{"predictions": [...]}``; ``GET /health``."""
    limit = (16 << 20) if model.task == "image-classification" else (1 << 20)
    lock = threading.Lock()  # one graph run at a time: onnxruntime already uses every core it was given

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._send(200, {"ready": True, "model": model.manifest["name"], "version": model.manifest["version"]})
            else:
                self._send(404, {"error": f"no route {self.path}; POST /predict or GET /health"})

        def do_POST(self) -> None:
            if self.path != "/predict":
                self._send(404, {"error": f"no route {self.path}; POST /predict"})
                return
            try:
                size = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                size = -1
            if not 0 < size <= limit:
                self._send(413 if size > limit else 400, {"error": f"send a JSON body of 1 to {limit} bytes"})
                return
            try:
                body = json.loads(self.rfile.read(size))
                inputs = body.get("inputs") if isinstance(body, dict) else None
                if not isinstance(inputs, list) or not 0 < len(inputs) <= MAX_INPUTS:
                    raise EdgeError(f"expected {{\"inputs\": [...]}} with 1 to {MAX_INPUTS} items")
                items = [model.item(v, f"inputs[{i}]") for i, v in enumerate(inputs)]
            except (EdgeError, ValueError) as exc:
                self._send(400, {"error": str(exc)})
                return
            with lock:
                preds = model.predict(items)
            self._send(200, {"model": model.manifest["name"], "predictions": preds})

        def log_message(self, format: str, *args: Any) -> None:  # no request lines (they may hold user text)
            return

    server = ThreadingHTTPServer((host, port), Handler)
    print(json.dumps({"serving": f"http://{host}:{server.server_address[1]}", "model": model.manifest["name"]}),
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main(argv: list[str] | None = None) -> int:
    """The command line; exit status 1 with one line on stderr for a bad bundle or input."""
    parser = argparse.ArgumentParser(description="Run this edge package's model.")
    parser.add_argument("items", nargs="*", help="texts (text bundles) or image files (image bundles)")
    parser.add_argument("--serve", action="store_true", help="serve POST /predict over HTTP")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime threads [default: all cores]")
    args = parser.parse_args(argv)
    try:
        model = Model(threads=args.threads)
        if args.serve:
            serve(model, args.host, args.port)
            return 0
        if not args.items:
            parser.error("give items to predict, or --serve")
        values: list[Any] = args.items
        if model.task == "image-classification":
            values = [Path(p).read_bytes() for p in args.items]
        items = [model.item(v, f"items[{i}]") for i, v in enumerate(values)]
        for pred in model.predict(items):
            sys.stdout.write(json.dumps(pred) + "\n")
        return 0
    except (EdgeError, OSError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())

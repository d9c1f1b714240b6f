"""Runtime: load a bundle and predict without PyTorch.

``Runtime.load`` reads the manifest and picks the runtime class of the bundle's task from the
kinds table (``tasks/registry.py``, imported lazily). Every runtime offers the same surface to the server:
``parse_items`` (validate JSON inputs), ``run_batch`` (what the batcher calls: one output per item;
classifiers answer it with ``predict_proba``), ``predict``, ``warmup``, ``describe``, ``v2_inputs`` and
the file verbs used by the CLI.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

import numpy as np

from aiforge.bundle.format import BundleFiles, BundleManifest
from aiforge.bundle.registry import Registry
from aiforge.errors import BundleError, DataError, InputError, SpecError
from aiforge.tasks.registry import get_kind, resolve

if TYPE_CHECKING:
    import onnxruntime as ort

    from aiforge.audit.metrics import Metrics


__all__ = ["GRAPH_LEVELS", "ItemLimits", "Prediction", "Runtime", "available_cpus", "onnx_session", "run_concurrently",
           "session_settings"]

T = TypeVar("T")


def available_cpus() -> int:
    """How many CPUs this process may run on (``taskset``/cgroup affinity respected), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Prediction:
    """The top label, its probability, and the probability of every label."""

    label: str
    score: float
    scores: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class ItemLimits:
    """Per-request input limits a server applies (``parse_items`` enforces them)."""

    max_inputs: int = 256
    max_text_chars: int = 10_000
    max_image_bytes: int = 8 << 20
    max_image_pixels: int = 40_000_000


GRAPH_LEVELS = ("basic", "extended", "all")  # onnxruntime graph optimization levels a pipeline may name


def onnx_session(path: Path, *, threads: int | None = None, level: str | None = None) -> ort.InferenceSession:
    """An onnxruntime session with aiforge's settings (all graph optimisations unless ``level``, CUDA when present).

    ``threads`` defaults to the CPUs this process may run on (a server under ``taskset -c 1`` uses one).

    Raises:
        BundleError: the graph cannot be loaded, or ``level`` is not one of ``GRAPH_LEVELS``.
    """
    import onnxruntime as ort

    levels = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    if (level or "all") not in levels:
        raise BundleError(f"{path.parent}: graph_optimization_level {level!r}: expected one of {list(levels)}.")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or available_cpus()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = levels[level or "all"]
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:
        raise BundleError(f"{path.parent}: cannot load {path.name} ({exc}).") from exc


def run_concurrently(run: Callable[[int, T], None], batches: Iterable[T], *, workers: int) -> None:
    """Call ``run(worker, batch)`` on every batch, ``workers`` batches at a time, each on its own thread.

    Pipeline parallelism across batches: onnxruntime's ``InferenceSession.run`` is thread-safe and
    releases the GIL, so one session with one intra-op thread runs ``workers`` batches at once on as
    many cores, without the fork/join of splitting each small GEMM. Workers take the next batch in
    order (``worker`` is 0 for the calling thread, 1.. for the others; a generator of batches is
    advanced under a lock); ``run`` writes its own result (e.g. into rows of a shared array), so the
    order of the output is the caller's. One worker runs in the calling thread alone.

    Raises:
        Exception: the first exception a batch raised, after every batch already started has
            finished (the batches not started yet are not run); no thread is left running.
    """
    if workers <= 1:
        for batch in batches:
            run(0, batch)
        return
    lock, failed = threading.Lock(), threading.Event()
    errors: list[BaseException] = []
    remaining = iter(batches)

    def work(worker: int) -> None:
        while not failed.is_set():
            try:
                with lock:
                    batch = next(remaining, _DONE)
                if batch is _DONE:
                    return
                run(worker, cast(T, batch))
            except BaseException as exc:  # raised again below, in the caller's thread
                errors.append(exc)
                failed.set()
                return

    threads = [threading.Thread(target=work, args=(w,), name=f"aiforge-offline-{w}", daemon=True)
               for w in range(1, workers)]
    for t in threads:
        t.start()
    try:
        work(0)
    finally:
        for t in threads:
            t.join()
    if errors:
        raise errors[0]


_DONE = object()  # run_concurrently's end of the batches


def session_settings(manifest: BundleManifest, threads: int | None) -> dict[str, Any]:
    """``onnx_session`` keywords from the bundle spec's ``serve`` block (``intra_op_threads``,
    ``graph_optimization_level``: what ``aiforge optimize`` chose); ``threads`` given wins."""
    serve = (manifest.extra.get("spec") or {}).get("serve") or {}
    chosen = threads or serve.get("intra_op_threads")
    return {"threads": int(chosen) if chosen else None, "level": serve.get("graph_optimization_level")}


class Runtime:
    """A loaded bundle (base class). Thread-safe: ``predict`` may be called from many threads.

    Subclasses set ``labels`` and ``precision`` and implement ``parse_items`` and either
    ``predict_proba`` (classifiers: they get ``run_batch``, ``predict`` and the v2 protocol for free)
    or ``run_batch`` (kinds whose output per item is not a probability row, e.g. rankings).
    """

    task: ClassVar[str] = ""
    labels: list[str]
    precision: str
    out_of_scope_label: str | None = None  # a classifier's label for rejected items; servers flag it

    def __init__(self, path: Path, manifest: BundleManifest, *, pipeline: dict[str, Any] | None = None) -> None:
        self.path = path
        self.manifest = manifest
        self.pipeline: dict[str, Any]
        if pipeline is not None:  # read and checked with the bundle (BundleFiles)
            self.pipeline = pipeline
            return
        try:
            self.pipeline = json.loads((path / "pipeline.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise BundleError(f"{path}: pipeline.json is missing or unreadable ({exc}).") from exc

    @classmethod
    def load(cls, name_or_path: str | Path, *, version: int | str | None = None, precision: str = "auto",
             home: str | Path | None = None, threads: int | None = None) -> Runtime:
        """Load a bundle by folder, ``NAME`` or ``NAME:VERSION`` (latest by default).

        Raises:
            RegistryError: unknown name or version.
            BundleError: the bundle is incomplete, corrupt, of an unknown format or task.
            ChecksumError: a file does not match its manifest (names the file).
        """
        path = Registry(home).resolve(name_or_path, version)
        files = BundleFiles(path)
        try:
            kind = get_kind(files.manifest.task, where=str(path))
        except SpecError as exc:
            raise BundleError(f"{path}: no runtime for this bundle's task ({exc}).") from exc
        runtime_cls: type[Runtime] = resolve(kind.runtime)
        runtime = runtime_cls.open_files(files, precision=precision, threads=threads)
        if getattr(runtime, "precision", None) == "int8":
            from aiforge.bundle.cpu import portability_warning

            parity = files.manifest.extra.get("parity")
            warning = portability_warning(parity.get("int8_cpu") if isinstance(parity, dict) else None)
            if warning:
                logging.getLogger("aiforge.runtime").warning("%s: %s", files.manifest.name, warning)
        return runtime

    @classmethod
    def open_files(cls, files: BundleFiles, *, precision: str = "auto", threads: int | None = None) -> Runtime:
        """Build this runtime from an opened bundle, every file hashed exactly once (``load`` calls it).

        The default hashes every file, then ``open`` reads the folder. A runtime that loads its files
        through ``files.load`` (text: each hashed just before it is loaded, refused if it changed meanwhile)
        overrides this, then calls ``files.verify_rest()`` for the files it did not load.

        Raises:
            BundleError: a file is corrupt or unreadable (``ChecksumError`` when it does not match).
        """
        files.verify_rest()
        return cls.open(files.path, files.manifest, precision=precision, threads=threads)

    @classmethod
    def open(cls, path: Path, manifest: BundleManifest, *, precision: str = "auto",
             threads: int | None = None) -> Runtime:
        """Build this runtime from a verified bundle folder (``open_files`` calls it)."""
        raise NotImplementedError

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    # --- what the server calls ---------------------------------------------------------

    def parse_items(self, items: list[Any], where: str, limits: ItemLimits) -> list[Any]:
        """Validate request items (JSON values) and turn them into what ``run_batch`` takes.

        Every item is checked here, before it can join a batch; strings go through the shared
        checks of :mod:`aiforge.bundle.inputs` (``check_text``, ``check_strings``), so a lone
        surrogate or a deep nesting is refused the same way by every kind.

        Raises:
            InputError: an item is of the wrong type or over a limit; the message names
                ``where[i]`` and what was expected.
        """
        raise NotImplementedError

    def v2_inputs(self, tensors: list[dict[str, Any]]) -> list[Any]:
        """Items from Open Inference Protocol v2 input tensors (default: one BYTES tensor).

        Raises:
            InputError: the tensors do not fit this model.
        """
        if len(tensors) != 1:
            raise InputError(f"expected one input tensor, got {len(tensors)}")
        tensor = tensors[0]
        where = f"inputs[0] ({tensor.get('name')!r})"
        if str(tensor.get("datatype", "")).upper() != "BYTES":
            raise InputError(f"{where}: datatype must be BYTES, got {tensor.get('datatype')!r}")
        shape, data = tensor.get("shape") or [], tensor.get("data") or []
        if any(d < 0 for d in shape) or math.prod(shape) != len(data):
            raise InputError(f"{where}: shape {shape} does not match {len(data)} data elements")
        if not all(isinstance(t, str) for t in data):
            raise InputError(f"{where}: every data element must be a string")
        return [str(t) for t in data]

    def v2_metadata_inputs(self) -> list[dict[str, Any]]:
        """The ``inputs`` list of the v2 model metadata."""
        return [{"name": "input", "datatype": "BYTES", "shape": [-1]}]

    def v2_output_names(self) -> tuple[str, ...]:
        """The output tensors a v2 infer request may ask for (default: a classifier's, plus ``out_of_scope``
        for a classifier with an out-of-scope label)."""
        oos = ("out_of_scope",) if self.out_of_scope_label is not None else ()
        return ("label", "score", "probabilities", *oos)

    def v2_metadata_outputs(self) -> list[dict[str, Any]]:
        """The ``outputs`` list of the v2 model metadata (default: a classifier's)."""
        return [{"name": "label", "datatype": "BYTES", "shape": [-1]},
                {"name": "score", "datatype": "FP32", "shape": [-1]},
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(self.labels)]},
                *([{"name": "out_of_scope", "datatype": "BOOL", "shape": [-1]}]
                  if self.out_of_scope_label is not None else [])]

    def v2_outputs(self, results: Sequence[Any]) -> dict[str, dict[str, Any]]:
        """The v2 output tensors, by name, for ``run_batch``'s results (default: a classifier's rows)."""
        probs = np.asarray(results)
        best = probs.argmax(axis=1)
        n = len(probs)
        out = {
            "label": {"name": "label", "datatype": "BYTES", "shape": [n], "data": [self.labels[i] for i in best]},
            "score": {"name": "score", "datatype": "FP32", "shape": [n],
                      "data": probs[np.arange(n), best].astype(float).tolist()},
            "probabilities": {"name": "probabilities", "datatype": "FP32", "shape": list(probs.shape),
                              "data": probs.astype(float).ravel().tolist()},
        }
        if self.out_of_scope_label is not None:
            out["out_of_scope"] = {"name": "out_of_scope", "datatype": "BOOL", "shape": [n],
                                   "data": [self.labels[i] == self.out_of_scope_label for i in best]}
        return out

    def run_batch(self, items: list[Any]) -> Sequence[Any]:
        """One output per parsed item, in input order: what the server's batcher calls.

        The default is a classifier's: ``predict_proba``'s rows.
        """
        # An ndarray is not a registered Sequence, yet it has all the batcher uses (len and
        # slicing), and classifier routes read it back with np.asarray without a copy.
        return cast(Sequence[Any], self.predict_proba(items))

    def predict_proba(self, items: list[Any]) -> np.ndarray:
        """Probabilities, one row per item, columns in ``labels`` order."""
        raise NotImplementedError(f"{type(self).__name__} does not classify; its batches run through run_batch")

    def predict(self, items: list[Any]) -> list[Prediction]:
        """The top label and all probabilities for each item, in input order."""
        probs = self.predict_proba(items)
        return [
            Prediction(self.labels[int(p.argmax())], float(p.max()),
                       {y: float(v) for y, v in zip(self.labels, p, strict=True)})
            for p in probs
        ]

    # --- what a batch job (``aiforge batch``) calls ----------------------------------------

    def parse_rows(self, rows: list[Any], where: str, limits: ItemLimits) -> list[Any]:
        """Rows of a batch file (a column's values, or a record per row) as ``run_batch`` items.

        The default is ``parse_items``: a row is what a client would send.

        Raises:
            InputError: a row is not a valid item; the message names ``where[i]``.
        """
        return self.parse_items(rows, where, limits)

    def row_outputs(self, results: Sequence[Any]) -> list[Any]:
        """``run_batch``'s results as JSON values for a batch job's ``output`` column (default: as they are)."""
        return list(results)

    def log_item_errors(self, items: Sequence[Any]) -> list[str | None]:
        """For an interaction log (``pipeline.json``'s ``batch_log``): why each logged item cannot be used,
        or None. The default accepts every item."""
        return [None for _ in items]

    def warmup(self) -> None:
        """Run the graph once or twice so the first request is not slow."""

    def counters(self) -> dict[str, int]:
        """Monotonic counts the server exports as ``aiforge_runtime_events_total{model, counter}``."""
        return {}

    def describe(self) -> dict[str, Any]:
        """Name, version, task, precision, labels and headline metrics, for listings and servers."""
        return {"name": self.name, "version": self.version, "task": self.manifest.task,
                "precision": self.precision, "labels": self.labels,
                "metrics": self.manifest.extra.get("metrics", {})}

    # --- what the CLI calls ------------------------------------------------------------

    def evaluate_file(self, path: str | Path, *, columns: Mapping[str, str] | None = None) -> Metrics:
        """Score the bundle on a labelled file; ``columns`` maps a role ("text", "label"…) to a column.

        Raises:
            DataError: the file or its columns are bad.
        """
        raise DataError(f"{self.manifest.task} bundles cannot be evaluated on a file.")

    def predict_file(self, path: str | Path, *, columns: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """Predict every item of a file; one JSON-ready dict per item.

        Raises:
            DataError: the file is missing, unreadable or lacks a needed column.
        """
        raise DataError(f"{self.manifest.task} bundles cannot predict from a file.")

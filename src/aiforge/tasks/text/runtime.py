"""TextRuntime: a text-classification bundle served without PyTorch (tokenizers + onnxruntime)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from aiforge.bundle.format import BundleFiles, BundleManifest
from aiforge.bundle.inputs import check_text
from aiforge.bundle.out_of_scope import DistanceScorer, NearestScorer
from aiforge.bundle.runtime import ItemLimits, Runtime, available_cpus, onnx_session, run_concurrently, session_settings
from aiforge.bundle.tokens import encode_batches
from aiforge.errors import BundleError, DataError, InputError

if TYPE_CHECKING:
    import onnxruntime as ort

    from aiforge.audit.metrics import Metrics

__all__ = ["TextRuntime"]

T = TypeVar("T")

OFFLINE_MIN_BATCHES = 4  # texts for at least this many batches run as concurrent batches (_offline_plan)
_OFFLINE_LOCK = threading.Lock()  # one offline session per runtime, made once


class TextRuntime(Runtime):
    """A text-classification bundle: tokenizer + one ONNX graph (fp32 or int8)."""

    task = "text-classification"

    def __init__(self, path: Path, manifest: BundleManifest, *, precision: str = "auto",
                 threads: int | None = None, batch_size: int = 64, files: BundleFiles | None = None) -> None:
        """``files``: the opened bundle, so every file loaded is hashed as it is loaded (else load ``path``'s)."""
        from tokenizers import Tokenizer

        def load(rel: str, opener: Callable[[Path], T]) -> T:
            return files.load(rel, opener) if files is not None else opener(path / rel)

        def array(file: Path) -> np.ndarray:
            return np.asarray(np.load(file, allow_pickle=False))

        super().__init__(path, manifest, pipeline=files.pipeline if files is not None else None)
        self.batch_size = batch_size
        try:
            graphs: dict[str, str] = self.pipeline["graphs"]
            self.labels = list(self.pipeline["labels"])
            max_length = int(self.pipeline["max_length"])
        except (KeyError, TypeError) as exc:
            raise BundleError(f"{path}: pipeline.json is incomplete ({exc}).") from exc
        chosen = self.pipeline.get("default_precision", "fp32") if precision == "auto" else precision
        chosen = "int8" if chosen == "int8-only" else chosen  # text int8 has no guard to turn off
        if chosen not in graphs:
            raise BundleError(f"{path}: no {chosen!r} graph in this bundle; it has {sorted(graphs)}.")
        self.precision = chosen
        self.tokenizer = load(self.pipeline.get("tokenizer", "tokenizer.json"), lambda f: Tokenizer.from_file(str(f)))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=max_length)
        settings = session_settings(manifest, threads)
        self.session = load(graphs[chosen], lambda f: onnx_session(f, **settings))
        self._output = self.pipeline.get("output", "probabilities")
        self.in_scope_labels = list(self.labels)
        self._oos: tuple[DistanceScorer | NearestScorer | None, float, str | None] | None = None
        oos = self.pipeline.get("out_of_scope")
        if oos:
            try:
                scorer: DistanceScorer | NearestScorer | None = None
                method = oos.get("method", "distance")
                if method == "nearest":
                    scorer = NearestScorer(load(oos["examples"], array))
                elif method == "distance":
                    scorer = DistanceScorer(load(oos["means"], array), load(oos["precision"], array))
                self._oos = (scorer, float(oos["threshold"]), oos.get("features"))
                self.out_of_scope_label = str(oos["name"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise BundleError(f"{path}: the out_of_scope files are missing or unreadable ({exc}).") from exc
            self.labels = [*self.labels, self.out_of_scope_label]  # served as one more label

    @classmethod
    def open(cls, path: Path, manifest: BundleManifest, *, precision: str = "auto",
             threads: int | None = None) -> TextRuntime:
        return cls(path, manifest, precision=precision, threads=threads)

    @classmethod
    def open_files(cls, files: BundleFiles, *, precision: str = "auto", threads: int | None = None) -> TextRuntime:
        # the tokenizer and the graph are hashed as they are loaded; the rest is hashed after
        rt = cls(files.path, files.manifest, precision=precision, threads=threads, files=files)
        files.verify_rest()
        return rt

    def parse_items(self, items: list[Any], where: str, limits: ItemLimits) -> list[Any]:
        return [check_text(t, f"{where}[{i}]", max_chars=limits.max_text_chars) for i, t in enumerate(items)]

    def v2_metadata_inputs(self) -> list[dict[str, Any]]:
        return [{"name": "text", "datatype": "BYTES", "shape": [-1]}]

    offline_min_batches = OFFLINE_MIN_BATCHES  # set on an instance to move the threshold (the bench: sequential)
    _offline: tuple[ort.InferenceSession, ort.InferenceSession] | None = None  # (serving, offline): _offline_session

    def predict_proba(self, items: list[Any]) -> np.ndarray:
        """Probabilities, one row per text, columns in ``labels`` order.

        Texts are sorted by token length and run in batches, so padding stays small. Many texts
        (``offline_min_batches`` batches or more, e.g. a file or a batch job's chunk) run as
        concurrent batches when the session may use more than one thread (``_offline_plan``); the
        output is the same, row for row, as running them one after another.

        Raises:
            InputError: ``items`` is not a list of strings.
        """
        texts = items
        if not isinstance(texts, list | tuple) or not all(isinstance(t, str) for t in texts):
            raise InputError("predict() takes a list of strings.")
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        if not texts:
            return out
        batches = encode_batches(self.tokenizer, list(texts), self.batch_size)
        session, workers = self._offline_plan(len(texts))

        def run(_worker: int, batch: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
            self._run_into(out, session, *batch)

        run_concurrently(run, batches, workers=workers)
        return out

    def _run_into(self, out: np.ndarray, session: ort.InferenceSession, idx: np.ndarray, ids: np.ndarray,
                  mask: np.ndarray) -> None:
        """Run one padded batch and write its rows ``idx`` of ``out``."""
        feeds = {"input_ids": ids, "attention_mask": mask}
        if self._oos is None:
            out[idx] = session.run([self._output], feeds)[0]
            return
        n = len(self.in_scope_labels)
        scorer, threshold, features = self._oos
        if scorer is not None and features is not None:
            probs, feats = session.run([self._output, features], feeds)
            rejected = scorer.score(feats) > threshold
        else:  # method probability: the score is minus the top probability
            probs = session.run([self._output], feeds)[0]
            rejected = -probs.max(axis=1) > threshold
        # a rejected text is all out_of_scope; an accepted one keeps its class probabilities
        out[idx, :n] = np.where(rejected[:, None], 0.0, probs)
        out[idx, n] = rejected.astype(np.float32)

    def _offline_plan(self, count: int) -> tuple[ort.InferenceSession, int]:
        """The session and number of concurrent batches for ``count`` texts.

        Fewer than ``offline_min_batches`` batches (every request of a server at its default
        ``max_batch_size``), a session of one intra-op thread (``--threads 1``, a bundle's
        ``intra_op_threads: 1``), one CPU, or a GPU session: the serving session, one batch at a
        time. Otherwise as many batches at once as the serving session has intra-op threads (at most
        the CPUs this process may use), all on one extra session of one intra-op thread
        (``_offline_session``): measured in ``bench/optimize.py --runtime`` (docs/optimize.md, "The
        offline runtime"), this beats one batch at a time on a session of as many threads.
        """
        if count < self.offline_min_batches * self.batch_size:
            return self.session, 1
        threads = self.session.get_session_options().intra_op_num_threads or available_cpus()  # 0: onnxruntime's own
        workers = min(threads, available_cpus())
        if workers <= 1 or self.session.get_providers()[0] != "CPUExecutionProvider":
            return self.session, 1
        return self._offline_session(), workers

    def _offline_session(self) -> ort.InferenceSession:
        """The one-intra-op-thread session concurrent batches share, made on first need from the bundle's graph
        of ``precision`` (hashed again just before it is loaded, so the bytes run are the manifest's).

        It stands for the serving session it was made beside: if ``session`` is replaced later, concurrent
        batches run on the new one (a replacement made before the first large call is not detected).
        """
        with _OFFLINE_LOCK:
            if self._offline is None:
                level = session_settings(self.manifest, None)["level"]
                rel = self.pipeline["graphs"][self.precision]
                offline = BundleFiles(self.path).load(rel, lambda f: onnx_session(f, threads=1, level=level))
                self._offline = (self.session, offline)
            serving, offline = self._offline
            return offline if serving is self.session else self.session

    def warmup(self) -> None:
        self.predict(["warm up", "a slightly longer sentence to warm up the graph for longer inputs"])

    def evaluate_file(self, path: str | Path, *, columns: Mapping[str, str] | None = None) -> Metrics:
        # lazy: the data readers (pandas) and metrics are for the CLI, not the server start-up
        from aiforge.audit.metrics import classification_metrics
        from aiforge.tasks.text.data import check_test_labels, load_text_dataset

        cols = {**self.manifest.extra.get("columns", {}), **(columns or {})}
        ds = load_text_dataset(path, text_column=cols.get("text", "text"), label_column=cols.get("label", "label"))
        check_test_labels(ds, self.labels)
        return classification_metrics(ds.labels, self.predict_proba(ds.texts), self.labels)

    def predict_file(self, path: str | Path, *, columns: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        # lazy: the data readers (pandas) are for the CLI, not the server start-up
        from aiforge.tasks.text.data import load_text_dataset

        p = Path(path)
        if p.suffix.lower() == ".txt":
            if not p.is_file():
                raise DataError(f"{p}: input file not found.")
            texts = [line for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
            if not texts:
                raise DataError(f"{p}: no non-empty lines to predict.")
        else:
            col = (columns or {}).get("text") or self.manifest.extra.get("columns", {}).get("text", "text")
            texts = load_text_dataset(p, text_column=col, label_column="", need_labels=False).texts
        flag = self.out_of_scope_label
        return [{"text": t, **pred.to_dict(), **({"out_of_scope": pred.label == flag} if flag else {})}
                for t, pred in zip(texts, self.predict(texts), strict=True)]

"""RecommendRuntime: serve a recommendation bundle without PyTorch (onnxruntime, numpy, faiss).

A request is a :class:`Query` (who, what to exclude, how many); ``run_batch`` runs a batch
of them through the ONNX scoring graph in one call (or through the faiss index), so the
server's batcher groups concurrent requests. Unknown users fall back to the cold-start path:
the items they name (a new user's likes), else the most popular items.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aiforge.bundle.format import BundleManifest
from aiforge.bundle.inputs import check_strings
from aiforge.bundle.runtime import ItemLimits, Runtime, onnx_session
from aiforge.errors import BundleError, InputError, UnknownItem

__all__ = ["Query", "Ranking", "RecommendRuntime"]


_EXCLUDED = -1e8  # graph scores at or below this are masked items

Ranking = list[tuple[int, float]]  # (item index, score), best first


@dataclass(frozen=True)
class Query:
    """One recommendation request, resolved to bundle indices."""

    history: np.ndarray  # item indices the user liked
    exclude: np.ndarray  # item indices never to return
    allowed: np.ndarray | None  # boolean mask from the filter, or None for every item
    user_vector: np.ndarray | None
    k: int
    cold_start: str | None  # None (known user), "items" or "popularity"


def _load_npy(path: Path, *, mmap: bool = False) -> np.ndarray:
    try:
        arr: np.ndarray = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
        return arr
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path.parent}: cannot read {path.name} ({exc}).") from exc


class RecommendRuntime(Runtime):
    """A recommendation bundle: ONNX scorer (+ optional faiss index), id maps, item metadata."""

    task = "recommendation"

    def __init__(self, path: Path, manifest: BundleManifest, *, threads: int | None = None) -> None:
        super().__init__(path, manifest)
        p = self.pipeline
        try:
            items = json.loads((path / p["items"]).read_text(encoding="utf-8"))
            self.item_ids: list[str] = list(items["ids"])
            self.metadata: list[dict[str, Any]] = list(items["metadata"])
            self.user_ids: list[str] = json.loads((path / p["users"]).read_text(encoding="utf-8"))
            self.k_max = int(p["k_max"])
            self.algorithm = str(p["algorithm"])
        except (OSError, KeyError, TypeError, json.JSONDecodeError) as exc:
            raise BundleError(f"{path}: recommendation bundle is incomplete ({exc}).") from exc
        self.labels = []
        self.precision = "fp32"
        self.n_items = len(self.item_ids)
        self.item_index = {i: j for j, i in enumerate(self.item_ids)}
        self.user_index = {u: j for j, u in enumerate(self.user_ids)}
        self.indptr = _load_npy(path / "history_indptr.npy")
        self.indices = _load_npy(path / "history_indices.npy")
        self.popular = _load_npy(path / "popular.npy")
        self.user_factors = _load_npy(path / "user_factors.npy") if p.get("user_factors") else None
        # memory-mapped: a fold-in reads only the liked items' rows (the Gram matrix is stored)
        self.item_factors = _load_npy(path / "item_factors.npy", mmap=True) if p.get("user_factors") else None
        self._gram = _load_npy(path / "item_gram.npy") if p.get("user_factors") else None
        self.fold_in: dict[str, float] = dict(p.get("fold_in", {}))
        self.index = None
        self.session = None
        # Scoring graphs are many small ops: one intra-op thread avoids the pool's synchronisation,
        # which on 2 cores cost more than it saved (bench/recommend.py); batches still share the graph.
        threads = 1 if threads is None else min(threads, int(p.get("threads", 1)))
        if p.get("index") == "faiss":  # the index answers every query; the graph is not loaded
            import faiss

            self.index = faiss.read_index(str(path / p["faiss"]))
            self._needs_vector = True
        else:
            self.session = onnx_session(path / p["graph"], threads=threads)
            self._needs_vector = "user_vector" in {i.name for i in self.session.get_inputs()}
        self.filter_fields = sorted({k for m in self.metadata for k in m if k != "item"})
        self._filter_cache: dict[str, np.ndarray] = {}

    @classmethod
    def open(cls, path: Path, manifest: BundleManifest, *, precision: str = "auto",
             threads: int | None = None) -> RecommendRuntime:
        return cls(path, manifest, threads=threads)

    # --- building queries --------------------------------------------------------------

    def _items(self, ids: list[Any], where: str) -> np.ndarray:
        out = []
        for i, item in enumerate(ids):
            if not isinstance(item, str | int) or isinstance(item, bool):
                raise InputError(f"{where}[{i}]: expected an item id (string), got {type(item).__name__}")
            j = self.item_index.get(str(item))
            if j is None:
                raise InputError(f"{where}[{i}]: unknown item {str(item)!r}")
            out.append(j)
        return np.array(sorted(set(out)), dtype=np.int64)

    def _filter(self, spec: dict[str, Any] | None) -> np.ndarray | None:
        if not spec:
            return None
        if not isinstance(spec, dict):
            raise InputError("filter: expected an object such as {\"genres\": \"Comedy\"}")
        mask = np.ones(self.n_items, dtype=bool)
        for field, want in spec.items():
            if field not in self.filter_fields:
                raise InputError(f"filter.{field}: unknown field; filterable fields are {self.filter_fields}")
            mask &= self._field_mask(field, want)
        return mask

    def _field_mask(self, field: str, want: Any) -> np.ndarray:
        key = json.dumps([field, want], sort_keys=True, default=str)
        cached = self._filter_cache.get(key)
        if cached is not None:
            return cached
        values = [m.get(field) for m in self.metadata]
        if isinstance(want, dict):
            unknown = set(want) - {"min", "max"}
            bounds = [want.get("min"), want.get("max")]
            numeric = all(b is None or (isinstance(b, int | float) and not isinstance(b, bool)) for b in bounds)
            if unknown or not numeric:
                raise InputError(f"filter.{field}: a range is {{\"min\": number, \"max\": number}}, got {want!r}")
            lo = -np.inf if bounds[0] is None else bounds[0]
            hi = np.inf if bounds[1] is None else bounds[1]
            mask = np.array([isinstance(v, int | float) and lo <= v <= hi for v in values], dtype=bool)
        else:
            wanted = want if isinstance(want, list) else [want]
            if not wanted or not all(isinstance(w, str | int | float | bool) for w in wanted):
                raise InputError(f"filter.{field}: expected a value, a list of values or a range, got {want!r}")
            keys = {str(w).lower() for w in wanted}
            mask = np.array([bool(keys & ({str(x).lower() for x in v} if isinstance(v, list) else {str(v).lower()}))
                             for v in values], dtype=bool)
        if len(self._filter_cache) < 1024:
            self._filter_cache[key] = mask
        return mask

    def _fold_in(self, history: np.ndarray) -> np.ndarray:
        """A factor vector for a user who is not in the bundle, from the items they liked."""
        assert self.item_factors is not None and self._gram is not None  # factor bundles only
        v = np.asarray(self.item_factors[history], dtype=np.float32)
        if self.fold_in.get("kind") == 1.0:  # ALS: one least-squares step with confidence alpha
            c = float(self.fold_in.get("alpha", 1.0))
            reg = float(self.fold_in.get("regularization", 0.01))
            a = self._gram + (c - 1.0) * v.T @ v + reg * np.eye(v.shape[1], dtype=np.float32)
            out: np.ndarray = np.linalg.solve(a, c * v.sum(axis=0)).astype(np.float32)
            return out
        mean: np.ndarray = v.mean(axis=0).astype(np.float32)
        return mean  # BPR: the mean of the liked items' factors

    def query(self, *, user: Any = None, items: list[Any] | None = None, k: int = 10, exclude_seen: bool = True,
              filter: dict[str, Any] | None = None) -> Query:
        """Resolve a request; unknown users go to the cold-start path.

        Raises:
            InputError: k out of range, an unknown or malformed item id, or a bad filter.
        """
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.k_max:
            raise InputError(f"k: expected an integer from 1 to {self.k_max}, got {k!r}")
        if user is None and items is None:
            raise InputError("give \"user\" (a user id) or \"items\" (ids a new user liked)")
        # ids and filters are checked here, before the query joins a batch (a lone surrogate, deep nesting)
        for value, where in ((user, "user"), (items, "items"), (filter, "filter")):
            check_strings(value, where)
        if user is not None and (not isinstance(user, str | int) or isinstance(user, bool)):
            raise InputError(f"user: expected a user id (string), got {type(user).__name__}")
        liked = self._items(items, "items") if items is not None else np.zeros(0, dtype=np.int64)
        row = self.user_index.get(str(user)) if user is not None else None
        vector = None
        if row is not None:
            seen = self.indices[self.indptr[row]:self.indptr[row + 1]]
            history = np.union1d(seen, liked)
            cold = None
            if self._needs_vector:
                assert self.user_factors is not None
                vector = self.user_factors[row] if not len(liked) else self._fold_in(history)
        elif len(liked):
            history, cold = liked, "items"
            vector = self._fold_in(history) if self._needs_vector else None
        else:
            history, cold = liked, "popularity"
        exclude = history if exclude_seen else np.zeros(0, dtype=np.int64)
        return Query(history=history, exclude=exclude, allowed=self._filter(filter), user_vector=vector, k=k,
                     cold_start=cold)

    # --- scoring -----------------------------------------------------------------------

    def parse_items(self, items: list[Any], where: str, limits: ItemLimits) -> list[Any]:
        raise InputError(f"{where}: recommendation bundles answer POST /v1/models/{self.name}/recommend "
                         "and /similar, not predict")

    def parse_rows(self, rows: list[Any], where: str, limits: ItemLimits) -> list[Any]:
        """Batch rows as queries: a record with ``user`` and/or ``items`` (a list, or ids joined by ``|``),
        and optionally ``k`` (default 10) — what ``/recommend`` takes, one request per row.

        Raises:
            InputError: a row that is not such a record, or whose query is invalid; names ``where[i]``.
        """
        out: list[Any] = []
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise InputError(f"{where}[{i}]: expected a record with \"user\" and/or \"items\", "
                                 f"got {type(row).__name__}")
            items = row.get("items")
            if isinstance(items, str):
                items = [t for t in items.split("|") if t]
            elif items is not None and not isinstance(items, list):
                items = list(items) if hasattr(items, "__iter__") else items
            user = row.get("user")
            k = row.get("k", 10)
            try:
                k = int(k) if isinstance(k, str | float) and not isinstance(k, bool) else k
                out.append(self.query(user=None if user in ("", None) else user, items=items or None, k=k))
            except (InputError, ValueError) as exc:
                raise InputError(f"{where}[{i}]: {exc}") from exc
        return out

    def row_outputs(self, results: Sequence[Any]) -> list[Any]:
        """Each ranking as ``[{"item", "score", "rank"}]`` (item ids, best first)."""
        return [[{"item": self.item_ids[j], "score": s, "rank": r + 1} for r, (j, s) in enumerate(ranked)]
                for ranked in results]

    def log_item_errors(self, items: Sequence[Any]) -> list[str | None]:
        """An item that is not an id, or not in the bundle's catalogue, cannot be folded in."""
        return [f"expected an item id, got {type(v).__name__}" if not isinstance(v, str | int) or isinstance(v, bool)
                else None if str(v) in self.item_index else f"unknown item {str(v)!r} (not in the bundle's catalogue)"
                for v in items]

    def run_batch(self, items: list[Any]) -> list[Ranking]:
        """One ranking (item index, score), best first, per :class:`Query`, in input order."""
        out: list[Ranking] = [[] for _ in items]
        graph = [i for i, q in enumerate(items) if q.cold_start != "popularity"]
        for i, q in enumerate(items):
            if q.cold_start == "popularity":
                out[i] = self._popular(q)
        if graph and self.index is not None:
            for i in graph:
                out[i] = self._faiss(items[i])
        elif graph:
            for i, ranked in zip(graph, self._exact([items[i] for i in graph]), strict=True):
                out[i] = ranked
        return out

    def _popular(self, q: Query) -> Ranking:
        keep = np.ones(self.n_items, dtype=bool)
        keep[q.exclude] = False
        if q.allowed is not None:
            keep &= q.allowed
        order = self.popular[keep[self.popular]][: q.k]
        return [(int(j), float(len(self.popular) - r) / len(self.popular)) for r, j in enumerate(order)]

    def _exact(self, queries: list[Query]) -> list[Ranking]:
        """Run the graph on groups of similar history length (histories are padded to the longest)."""
        order = sorted(range(len(queries)), key=lambda i: len(queries[i].history))
        out: list[Ranking] = [[] for _ in queries]
        group: list[int] = []
        for i in order:
            longest = len(queries[i].history)
            filled = sum(len(queries[j].history) for j in group) + longest
            if group and longest * (len(group) + 1) > 2 * filled + 64:  # over half would be padding
                for j, ranked in zip(group, self._run([queries[j] for j in group]), strict=True):
                    out[j] = ranked
                group = []
            group.append(i)
        for j, ranked in zip(group, self._run([queries[j] for j in group]), strict=True):
            out[j] = ranked
        return out

    def _run(self, queries: list[Query]) -> list[Ranking]:
        b, n = len(queries), self.n_items
        width = max(1, max(len(q.history) for q in queries))
        history = np.full((b, width), n, dtype=np.int64)  # liked item indices, padded with n
        exclude = np.zeros((b, n), dtype=np.float32)
        for r, q in enumerate(queries):
            history[r, :len(q.history)] = q.history
            exclude[r, q.exclude] = 1.0
            if q.allowed is not None:
                exclude[r, ~q.allowed] = 1.0
        k = max(q.k for q in queries)
        feeds = {"history": history, "exclude": exclude, "k": np.array([min(k, n)], dtype=np.int64)}
        if self._needs_vector:
            feeds["user_vector"] = np.stack([q.user_vector for q in queries if q.user_vector is not None])
        assert self.session is not None  # exact bundles always load their graph
        scores, idx = self.session.run(["scores", "items"], feeds)
        return [[(int(j), float(s)) for j, s in zip(idx[r, :q.k], scores[r, :q.k], strict=True) if s > _EXCLUDED]
                for r, q in enumerate(queries)]

    def _faiss(self, q: Query) -> Ranking:
        assert self.index is not None and q.user_vector is not None
        vec = q.user_vector.astype(np.float32)[None, :]
        want = min(self.n_items, q.k + len(q.exclude) + 16)
        banned = set(q.exclude.tolist())
        while True:
            scores, idx = self.index.search(vec, want)
            ranked = [(int(j), float(s)) for j, s in zip(idx[0], scores[0], strict=True)
                      if j >= 0 and j not in banned and (q.allowed is None or q.allowed[j])]
            if len(ranked) >= q.k or want >= self.n_items:
                return ranked[: q.k]
            want = min(self.n_items, want * 4)

    # --- the API -------------------------------------------------------------------------

    def result(self, ranked: Ranking) -> list[dict[str, Any]]:
        """JSON-ready recommendations: item id, score, rank and the item's metadata."""
        return [{"item": self.item_ids[j], "score": s, "rank": r + 1,
                 "metadata": {k: v for k, v in self.metadata[j].items() if k != "item"}}
                for r, (j, s) in enumerate(ranked)]

    def recommend(self, user: Any = None, *, items: list[Any] | None = None, k: int = 10, exclude_seen: bool = True,
                  filter: dict[str, Any] | None = None) -> dict[str, Any]:
        """Top-k items for a known user, a new user's liked ``items``, or (cold start) anyone.

        Raises:
            InputError: a bad k, item id or filter.
        """
        q = self.query(user=user, items=items, k=k, exclude_seen=exclude_seen, filter=filter)
        return {"user": user, "cold_start": q.cold_start, "recommendations": self.result(self.run_batch([q])[0])}

    def similar_query(self, item: Any, k: int = 10, filter: dict[str, Any] | None = None) -> Query:
        """The query behind ``similar``: a user who liked only ``item``.

        Raises:
            UnknownItem: the item is not in the bundle.
            InputError: a bad k or filter.
        """
        if not isinstance(item, str | int) or isinstance(item, bool):
            raise InputError(f"item: expected an item id (string), got {type(item).__name__}")
        check_strings(item, "item")
        j = self.item_index.get(str(item))
        if j is None:
            raise UnknownItem(f"item {str(item)!r} is not in this model's catalogue of {self.n_items} items")
        q = self.query(items=[self.item_ids[j]], k=k, exclude_seen=True, filter=filter)
        return q

    def similar(self, item: Any, *, k: int = 10, filter: dict[str, Any] | None = None) -> dict[str, Any]:
        """Items most often liked together with ``item`` (or closest in content), best first."""
        q = self.similar_query(item, k, filter)
        return {"item": str(item), "similar": self.result(self.run_batch([q])[0])}

    def warmup(self) -> None:
        q = self.query(items=[self.item_ids[int(self.popular[0])]], k=min(10, self.k_max))
        self.run_batch([q, q])

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "task": self.manifest.task, "precision": self.precision,
                "algorithm": self.algorithm, "items": self.n_items, "users": len(self.user_ids),
                "index": "faiss" if self.index is not None else "exact", "filter_fields": self.filter_fields,
                "metrics": self.manifest.extra.get("metrics", {})}

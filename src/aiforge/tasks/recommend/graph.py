"""Recommender export: the scoring path as one ONNX graph, and a faiss index for big catalogues.

The graph takes ``history`` (b, L) liked item indices padded with n, ``exclude`` (b, n) mask,
``k`` and, for factor models, ``user_vector`` (b, d); it computes
:func:`aiforge.tasks.recommend.scoring.score_rows` (row normalisation, popularity penalty), masks
excluded items and returns ``scores`` and ``items`` from TopK. A history enters as indices, so
the item-item and content parts gather and sum the rows of the liked items (a user likes tens
of items, not thousands: far less work than a dense multi-hot MatMul). Items are stored
catalogue-first, so item-item rows pad with a zero row and the other items' scores are a Pad
(or a Gather for the imputed items). Arrays the runtime needs
besides the graph are ``.npy`` files (loaded with ``allow_pickle=False``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from aiforge.bundle.runtime import onnx_session
from aiforge.errors import ExportError
from aiforge.tasks.recommend.scoring import EXCLUDED, OUTSIDE, ScoringParts, score_rows, top_k

__all__ = ["build_graph", "bundle_order", "check_parity", "faiss_ready", "history_indices", "permute",
           "write_faiss_index"]


OPSET = 17


_EPS = 1e-9


def bundle_order(parts: ScoringParts) -> np.ndarray:
    """Item order of the bundle: the item-item catalogue first, then every other item."""
    if parts.catalogue is None:
        return np.arange(parts.n_items)
    return np.concatenate([parts.catalogue, parts.rest()])


def permute(parts: ScoringParts, order: np.ndarray) -> ScoringParts:
    """``parts`` with items re-indexed so that new item ``j`` is old item ``order[j]``."""
    def rows(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else a[order]

    catalogue = None if parts.catalogue is None else np.arange(len(parts.catalogue))
    return replace(parts, penalty=parts.penalty[order], factors=rows(parts.factors), content=rows(parts.content),
                   bias=rows(parts.bias), catalogue=catalogue)


def faiss_ready(parts: ScoringParts) -> bool:
    """True when the model is a pure inner product of user and item factors (what faiss searches)."""
    return (parts.factors is not None and not parts.popularity_penalty
            and {k for k, v in parts.weights.items() if v} == {"factors"})


def build_graph(parts: ScoringParts) -> object:
    """The ONNX scoring graph of ``parts`` (items already in bundle order).

    Raises:
        ExportError: the parts hold nothing to score with.
    """
    from onnx import TensorProto, helper, numpy_helper

    n = parts.n_items
    nodes: list[Any] = []
    inits: list[Any] = []
    inputs = [helper.make_tensor_value_info("history", TensorProto.INT64, ["batch", "liked"]),
              helper.make_tensor_value_info("exclude", TensorProto.FLOAT, ["batch", n]),
              helper.make_tensor_value_info("k", TensorProto.INT64, [1])]
    counter = iter(range(10_000))

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(op: str, ins: list[str], **attrs: Any) -> str:
        out = f"{op.lower()}_{next(counter)}"
        nodes.append(helper.make_node(op, ins, [out], **attrs))
        return out

    made: set[str] = set()

    def eps() -> str:
        if "eps" not in made:
            made.add("eps")
            const("eps", np.array(_EPS, dtype=np.float32))
        return "eps"

    def norm(x: str) -> str:
        top = node("Abs", [node("ReduceMax", [x], axes=[1], keepdims=1)])
        return node("Div", [x, node("Add", [top, eps()])])

    terms: list[str] = []
    w = parts.weights
    if parts.factors is not None and w.get("factors", 0):
        inputs.append(helper.make_tensor_value_info("user_vector", TensorProto.FLOAT,
                                                    ["batch", parts.factors.shape[1]]))
        s = norm(node("MatMul", ["user_vector", const("item_factors_t", parts.factors.T.astype(np.float32))]))
        terms.append(node("Mul", [s, const("w_factors", np.array(w["factors"], dtype=np.float32))]))
    if parts.item_item is not None and parts.catalogue is not None and w.get("item_item", 0):
        c = len(parts.catalogue)
        rows = np.vstack([parts.item_item, np.zeros((1, c), dtype=np.float32)]).astype(np.float32)
        idx = node("Min", ["history", const("c", np.array(c, dtype=np.int64))])  # outside items: zero row
        picked = node("Gather", [const("item_item", rows), idx], axis=0)
        cat = norm(node("ReduceSum", [picked, const("axis1", np.array([1], dtype=np.int64))], keepdims=0))
        if c == n:
            full = cat
        elif parts.impute_nbrs is not None and parts.impute_weights is not None:
            # rows are contiguous: gather catalogue columns as rows of the transpose, one neighbour
            # rank at a time (a ReduceSum over a middle axis is slow in onnxruntime), then back
            cat_t = node("Transpose", [cat], perm=[1, 0])
            rest = ""
            for j in range(parts.impute_nbrs.shape[1]):
                g = node("Gather", [cat_t, const(f"impute_nbrs_{j}", parts.impute_nbrs[:, j].astype(np.int64))],
                         axis=0)
                g = node("Mul", [g, const(f"impute_w_{j}", parts.impute_weights[:, j:j + 1].astype(np.float32))])
                rest = g if not rest else node("Add", [rest, g])
            full = node("Concat", [cat, node("Transpose", [rest], perm=[1, 0])], axis=1)
        else:
            full = node("Pad", [cat, const("pads", np.array([0, 0, 0, n - c], dtype=np.int64)),
                                const("outside", np.array(OUTSIDE, dtype=np.float32))])
        terms.append(node("Mul", [full, const("w_item_item", np.array(w["item_item"], dtype=np.float32))]))
    if parts.content is not None and w.get("content", 0):
        emb = np.vstack([parts.content, np.zeros((1, parts.content.shape[1]))]).astype(np.float32)
        content = const("content", emb)
        prof = node("ReduceSum", [node("Gather", [content, "history"], axis=0),
                                  const("axis1c", np.array([1], dtype=np.int64))], keepdims=0)
        prof = node("Div", [prof, node("Add", [node("ReduceL2", [prof], axes=[1], keepdims=1), eps()])])
        # a second, transposed copy: MatMul on it is several times faster than Gemm(transB)
        s = norm(node("MatMul", [prof, const("content_t", np.ascontiguousarray(parts.content.T.astype(np.float32)))]))
        terms.append(node("Mul", [s, const("w_content", np.array(w["content"], dtype=np.float32))]))
    offset = np.zeros(n, dtype=np.float32)
    if parts.bias is not None and w.get("bias", 0):
        offset += w["bias"] * parts.bias / (abs(parts.bias.max()) + _EPS)
    if parts.popularity_penalty:
        offset -= np.float32(parts.popularity_penalty) * parts.penalty
    if not terms and not offset.any():
        raise ExportError("the model has no scoring component to export.")
    if not terms:  # popularity: the same offset for every user
        terms.append(node("Mul", ["exclude", const("zeros", np.array(0.0, dtype=np.float32))]))
    total = terms[0]
    for t in terms[1:]:
        total = node("Add", [total, t])
    if offset.any():
        total = node("Add", [total, const("offset", offset[None, :])])
    masked = node("Where", [node("Greater", ["exclude", const("half", np.array(0.5, dtype=np.float32))]),
                            const("excluded", np.array(EXCLUDED, dtype=np.float32)), total])
    nodes.append(helper.make_node("TopK", [masked, "k"], ["scores", "items"], axis=1, largest=1, sorted=1))
    outputs = [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", "k"]),
               helper.make_tensor_value_info("items", TensorProto.INT64, ["batch", "k"])]
    graph = helper.make_graph(nodes, "aiforge_recommender", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="aiforge")
    model.ir_version = 9
    return model


def history_indices(rows: list[np.ndarray], n_items: int) -> np.ndarray:
    """The graph's ``history`` input: each row's liked item indices, padded with ``n_items``."""
    width = max(1, max((len(r) for r in rows), default=1))
    out = np.full((len(rows), width), n_items, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def check_parity(parts: ScoringParts, graph_path: Path, history: np.ndarray, exclude: np.ndarray,
                 user_vectors: np.ndarray | None, k: int) -> dict[str, float]:
    """Compare ONNX top-k with numpy scoring on the same users.

    Raises:
        ExportError: scores differ by more than 1e-4 or the top items disagree.
    """

    session = onnx_session(graph_path, threads=1)
    feeds: dict[str, np.ndarray] = {"history": history_indices([np.flatnonzero(r) for r in history], parts.n_items),
                                    "exclude": exclude.astype(np.float32),
                                    "k": np.array([k], dtype=np.int64)}
    if "user_vector" in {i.name for i in session.get_inputs()}:
        assert user_vectors is not None  # factor graphs always get vectors from the caller
        feeds["user_vector"] = user_vectors.astype(np.float32)
    scores, items = session.run(["scores", "items"], feeds)
    ref_scores = score_rows(parts, history, user_vectors)
    ref_items = top_k(ref_scores, exclude, k)
    ref_top = np.take_along_axis(np.where(exclude > 0, EXCLUDED, ref_scores), ref_items, axis=1)
    diff = float(np.abs(scores - ref_top).max())
    # a position agrees when both pick the same item, or items tied on score (ties may order differently)
    ref_at = np.take_along_axis(np.where(exclude > 0, EXCLUDED, ref_scores), items, axis=1)
    agree = float(np.mean((items == ref_items) | (np.abs(ref_at - ref_top) <= 1e-6)))
    if diff > 1e-4 or agree < 0.99:
        raise ExportError(f"ONNX scores differ from numpy: max |diff| {diff:.2e}, top-{k} overlap {agree:.4f}.")
    return {"max_abs_score_diff": diff, "topk_overlap": agree, "users": float(len(history))}


def write_faiss_index(factors: np.ndarray, path: Path, *, kind: str = "ivf", nprobe: int = 16,
                      seed: int = 0) -> dict[str, Any]:
    """Write an inner-product faiss index of item ``factors`` (faiss.write_index, never pickle).

    ``ivf`` (default): an inverted file of about 4 sqrt(n) lists, k-means trained on at most
    64k items, ``nprobe`` lists searched; ``hnsw``: a graph index (slower to build); ``flat``: exact.
    """
    import faiss

    x = np.ascontiguousarray(factors.astype(np.float32))
    n, d = x.shape
    index: Any
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, 16, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 40
        index.hnsw.efSearch = 64
    else:
        nlist = max(1, min(int(4 * np.sqrt(n)), n // 39))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(seed).choice(n, size=min(n, 64 * 1024), replace=False)
        index.train(x[np.sort(sample)])
        index.nprobe = min(nprobe, nlist)
    index.add(x)
    faiss.write_index(index, str(path))
    return {"kind": kind, "items": n, "dim": d}

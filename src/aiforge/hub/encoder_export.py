"""Export a hub text encoder as an encoder-only ONNX graph (mean pooling + L2 norm), parity-checked.

The graph is the same for every chat bundle built on a backbone, so it is built once and
kept in a cache folder (``$AIFORGE_CACHE`` or ``$AIFORGE_HOME/cache``); bundles copy it.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from aiforge.bundle.registry import default_home
from aiforge.errors import ExportError
from aiforge.hub.catalog import get_backbone
from aiforge.hub.onnx_encoder import ENCODER_GRAPH, ENCODER_TOKENIZER, OnnxEncoder
from aiforge.version import __version__

__all__ = ["PARITY_TEXTS", "cache_dir", "cached_encoder", "export_encoder", "wrap_onnx_encoder"]


PARITY_TEXTS = [
    "How do I reset my password?", "The card I ordered has still not arrived.",
    "aiforge turns pre-trained models into deployed applications.", "ok",
    "Retrieval fuses BM25 and dense vectors by reciprocal rank; the threshold decides when to abstain. " * 3,
]


def cache_dir() -> Path:
    """``$AIFORGE_CACHE`` or ``$AIFORGE_HOME/cache``."""
    env = os.environ.get("AIFORGE_CACHE")
    return Path(env).expanduser() if env else default_home() / "cache"


def export_encoder(backbone_name: str, directory: Path, *, max_diff: float = 1e-4) -> dict[str, Any]:
    """Write ``encoder.onnx`` and ``encoder_tokenizer.json`` into ``directory``; return the parity record.

    Raises:
        ExportError: export failed or ONNX embeddings differ from PyTorch by ``max_diff`` or more.
        BackboneError: the backbone is unknown or its package is missing.
    """
    backbone = get_backbone(backbone_name)
    if backbone.access == "files":  # an ONNX model in a package: pooled in the graph, no PyTorch
        return wrap_onnx_encoder(backbone_name, directory, max_diff=max_diff)
    import torch

    # lazy: torch is imported only when an encoder is exported or run in PyTorch
    from aiforge.hub.text_encoder import FEATURE_SCALE, TextEncoder, iter_batches, load_tokenizer
    from aiforge.optimize.onnx_export import export_onnx

    encoder = TextEncoder(backbone).eval()
    tokenizer = load_tokenizer(backbone.path() / "tokenizer.json", 256)

    class EmbeddingGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.encoder(input_ids, attention_mask) / FEATURE_SCALE  # type: ignore[no-any-return]

    graph = EmbeddingGraph().eval()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ENCODER_GRAPH
    _, ids, mask = next(iter_batches(tokenizer, PARITY_TEXTS[:2], 2, sort=False))
    export_onnx(graph, (ids, mask), path, inputs=["input_ids", "attention_mask"], outputs=["embeddings"],
                dynamic={"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}},
                torchscript_fallback=False, what="encoder ONNX")
    tokenizer.save(str(directory / ENCODER_TOKENIZER))
    with torch.inference_mode():
        ref = np.zeros((len(PARITY_TEXTS), encoder.dim), dtype=np.float32)
        for idx, i, m in iter_batches(tokenizer, PARITY_TEXTS, 8):
            ref[idx] = (encoder(i, m) / FEATURE_SCALE).numpy()
    got = OnnxEncoder(path, directory / ENCODER_TOKENIZER, threads=1).embed(PARITY_TEXTS)
    diff = float(np.abs(got - ref).max())
    parity = {"backbone": backbone.name, "samples": len(PARITY_TEXTS), "onnx_vs_torch_max_abs_diff": diff,
              "limit": max_diff, "ok": diff < max_diff, "aiforge_version": __version__}
    if not parity["ok"]:
        raise ExportError(f"encoder ONNX differs from PyTorch by {diff:.2e} (limit {max_diff:.0e}).")
    (directory / "parity.json").write_text(json.dumps(parity, indent=2), encoding="utf-8")
    return parity


def wrap_onnx_encoder(backbone_name: str, directory: Path, *, max_diff: float = 1e-4) -> dict[str, Any]:
    """``encoder.onnx`` from a packaged ONNX encoder (bge-small): the package's graph with ``[CLS]`` pooling
    and L2 norm appended and ``token_type_ids`` fed zeros inside, so it takes (ids, mask) like the MiniLM one.

    Parity: the wrapped graph against the package's graph pooled in numpy.

    Raises:
        ExportError: the wrapped graph differs by ``max_diff`` or more.
    """
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from aiforge.hub.text_encoder import load_tokenizer

    backbone = get_backbone(backbone_name)
    src = backbone.path()
    model = onnx.load(str(src / "model.onnx"))
    graph = model.graph
    hidden = graph.output[0].name
    if any(i.name == "token_type_ids" for i in graph.input):
        kept = [i for i in graph.input if i.name != "token_type_ids"]
        del graph.input[:]
        graph.input.extend(kept)
        graph.node.insert(0, helper.make_node("Mul", ["input_ids", "aiforge_zero"], ["token_type_ids"]))
        graph.initializer.append(helper.make_tensor("aiforge_zero", TensorProto.INT64, [], [0]))
    graph.initializer.append(helper.make_tensor("aiforge_cls", TensorProto.INT64, [], [0]))
    graph.node.extend([
        helper.make_node("Gather", [hidden, "aiforge_cls"], ["aiforge_pooled"], axis=1),
        helper.make_node("LpNormalization", ["aiforge_pooled"], ["embeddings"], axis=1, p=2),
    ])
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", backbone.dim]))
    directory.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(directory / ENCODER_GRAPH))
    tokenizer = load_tokenizer(src / "tokenizer.json", 256)
    tokenizer.save(str(directory / ENCODER_TOKENIZER))
    wrapped = OnnxEncoder(directory / ENCODER_GRAPH, directory / ENCODER_TOKENIZER, threads=1)
    # one text at a time on both sides: int8 activations are quantized per batch, so padding moves them
    got = np.vstack([wrapped.embed([t]) for t in PARITY_TEXTS])
    sess = ort.InferenceSession(str(src / "model.onnx"), providers=["CPUExecutionProvider"])
    ref = np.zeros_like(got)
    for i, text in enumerate(PARITY_TEXTS):
        e = tokenizer.encode(text)
        ids = np.array([e.ids], dtype=np.int64)
        cls = sess.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids),
                              "token_type_ids": np.zeros_like(ids)})[0][0, 0]
        ref[i] = cls / np.linalg.norm(cls)
    diff = float(np.abs(got - ref).max())
    parity = {"backbone": backbone.name, "samples": len(PARITY_TEXTS), "onnx_vs_torch_max_abs_diff": diff,
              "reference": "the package's int8 ONNX graph, [CLS] pooled in numpy", "limit": max_diff,
              "ok": diff < max_diff, "aiforge_version": __version__}
    if not parity["ok"]:
        raise ExportError(f"wrapped {backbone.name} encoder differs from its package graph by {diff:.2e}.")
    (directory / "parity.json").write_text(json.dumps(parity, indent=2), encoding="utf-8")
    return parity


def cached_encoder(backbone_name: str) -> tuple[Path, dict[str, Any]]:
    """The folder of the exported encoder for ``backbone_name`` (exported on first use) and its parity.

    Raises:
        ExportError: export failed or parity did not hold.
    """
    folder = cache_dir() / "encoders" / f"{backbone_name}-{__version__}"
    parity_file = folder / "parity.json"
    if not parity_file.is_file():
        tmp = folder.parent / f".tmp-{uuid.uuid4().hex}"
        try:
            export_encoder(backbone_name, tmp)
            if not parity_file.is_file():
                folder.parent.mkdir(parents=True, exist_ok=True)
                shutil.rmtree(folder, ignore_errors=True)
                os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder, json.loads(parity_file.read_text(encoding="utf-8"))

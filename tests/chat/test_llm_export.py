"""The KV-cache decoder the local LLM is exported from, on a tiny random Llama (grouped-query attention, tied head):
its logits equal transformers' for a prefill and for a step on the cache, in PyTorch and as ONNX in onnxruntime."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from aiforge.tasks.chat.llm_export import decoder_module


def test_kv_decoder_equals_transformers_in_torch_and_onnx(tmp_path: Path) -> None:
    cfg = LlamaConfig(vocab_size=300, hidden_size=96, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=6, num_key_value_heads=2, head_dim=16, rope_theta=100000.0,
                      tie_word_embeddings=True, rms_norm_eps=1e-5)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    decoder = decoder_module(model)
    ids = torch.randint(0, 300, (1, 9))
    empty = [torch.zeros(1, 2, 0, 16) for _ in range(4)]
    with torch.inference_mode():
        ref = model(ids).logits[0]
        first = decoder(ids[:, :5], *empty)
        second = decoder(ids[:, 5:], *first[1:])
    assert torch.allclose(first[0], ref[4], atol=1e-5)
    assert torch.allclose(second[0], ref[8], atol=1e-5)  # positions and mask follow the cache's length
    names = [f"{k}_{i}" for i in range(2) for k in ("key", "value")]
    path = tmp_path / "tiny.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(decoder, (ids[:, :5], *[torch.zeros(1, 2, 3, 16) for _ in names]), str(path),
                          dynamo=False, opset_version=18, input_names=["input_ids", *(f"past_{n}" for n in names)],
                          output_names=["logits", *(f"present_{n}" for n in names)],
                          dynamic_axes={"input_ids": {1: "seq"}, **{f"past_{n}": {2: "past"} for n in names}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {f"past_{n}": np.zeros((1, 2, 0, 16), np.float32) for n in names}
    out = session.run(None, {"input_ids": ids[:, :5].numpy(), **feed})
    feed = {f"past_{n}": v for n, v in zip(names, out[1:], strict=True)}
    out2 = session.run(None, {"input_ids": ids[:, 5:].numpy(), **feed})
    np.testing.assert_allclose(out[0], ref[4].numpy(), atol=1e-4)
    np.testing.assert_allclose(out2[0], ref[8].numpy(), atol=1e-4)
    assert out2[1].shape == (1, 2, 9, 16)
    stored = [i for i in onnx.load(str(path)).graph.initializer if 300 in i.dims]
    assert len(stored) == 1, "the tied embedding matrix is stored twice"

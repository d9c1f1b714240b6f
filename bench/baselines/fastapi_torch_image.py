"""Baseline: what a user writes by hand — FastAPI + the PyTorch model in eager mode, one image per call.

Reads MODEL_DIR (written by bench/vision.py): weights.safetensors (the fine-tuned
EfficientNet-Lite0 + head), meta.json (resolution, resize, labels, head kind). The request
is ``{"inputs": ["<base64 PNG/JPEG>"]}``; preprocessing is written out here with Pillow and
numpy (resize shorter side, centre crop, scale to [-1, 1]), as a user would.
"""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path

import numpy as np
import torch
from efficientnet_lite_pytorch import EfficientNet
from fastapi import FastAPI
from PIL import Image
from pydantic import BaseModel
from safetensors.torch import load_file

MODEL_DIR = Path(os.environ["MODEL_DIR"])
META = json.loads((MODEL_DIR / "meta.json").read_text())
RES, RESIZE, LABELS = META["resolution"], META["resize"], META["labels"]


class Model(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = EfficientNet.from_name("efficientnet-lite0", image_size=RES)
        self.head = torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Linear(1280, len(LABELS)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.net.extract_features(x).mean(dim=(2, 3)))


MODEL = Model()
MODEL.load_state_dict(load_file(str(MODEL_DIR / "weights.safetensors")))
MODEL.eval()
app = FastAPI()


class Query(BaseModel):
    inputs: list[str]


def prepare(b64: str) -> torch.Tensor:
    img = Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")
    w, h = img.size
    s = RESIZE / min(w, h)
    img = img.resize((max(RES, round(w * s)), max(RES, round(h * s))), Image.Resampling.BILINEAR)
    left, top = (img.width - RES) // 2, (img.height - RES) // 2
    arr = np.asarray(img.crop((left, top, left + RES, top + RES)), dtype=np.float32)
    return torch.from_numpy(((arr - 127.5) / 127.5).transpose(2, 0, 1).copy())


@app.get("/ready")
def ready() -> dict[str, bool]:
    return {"ready": True}


@app.post("/predict")
@torch.inference_mode()
def predict(q: Query) -> dict[str, object]:
    x = torch.stack([prepare(b) for b in q.inputs])
    probs = torch.softmax(MODEL(x), dim=-1)
    score, idx = probs.max(dim=-1)
    return {"predictions": [{"label": LABELS[int(i)], "score": float(s)} for s, i in zip(score, idx, strict=True)]}

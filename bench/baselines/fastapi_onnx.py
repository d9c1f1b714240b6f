"""Peer E: a hand-written FastAPI endpoint running the bundle's ONNX graph per request, no batching."""

from __future__ import annotations

from fastapi import FastAPI
from onnx_common import classify
from pydantic import BaseModel

app = FastAPI()


class Query(BaseModel):
    text: str


@app.get("/ready")
def ready() -> dict[str, bool]:
    return {"ready": True}


@app.post("/predict")
def predict(q: Query) -> dict[str, object]:
    return classify([q.text])[0]

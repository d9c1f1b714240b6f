"""Baseline A: what a user writes by hand — FastAPI calling sentence-transformers + head per request."""

from __future__ import annotations

from common import classify
from fastapi import FastAPI
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

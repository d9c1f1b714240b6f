"""Peer D: BentoML 1.4 adaptive batching (max batch 64) on the bundle's own ONNX graph."""

from __future__ import annotations

import bentoml


@bentoml.service(workers=1, traffic={"timeout": 60, "max_concurrency": 1024})
class OnnxClassifier:
    def __init__(self) -> None:
        from onnx_common import classify

        self._classify = classify

    @bentoml.api(batchable=True, max_batch_size=64, max_latency_ms=60_000)
    def predict(self, texts: list[str]) -> list[dict[str, object]]:
        return self._classify(texts)

"""Peer C: LitServe with its dynamic batching (max batch 64, 5 ms timeout like aiforge's max_wait_ms) on
the bundle's own ONNX graph.

    python litserve_onnx.py PORT

No ``from __future__ import annotations`` here: LitServe reads decode_request's annotation to choose
how FastAPI parses the body (a string annotation made it a query parameter: every request got a 422).
"""

import sys
from typing import Any

import litserve as ls


class OnnxAPI(ls.LitAPI):  # type: ignore[misc]
    def setup(self, device: str) -> None:
        from onnx_common import classify

        self._classify = classify

    def decode_request(self, request: dict[str, Any]) -> str:
        return str(request["text"])

    def batch(self, inputs: list[str]) -> list[str]:
        return list(inputs)

    def predict(self, texts: list[str]) -> list[dict[str, object]]:
        return self._classify(texts)

    def unbatch(self, output: list[dict[str, object]]) -> list[dict[str, object]]:
        return output

    def encode_response(self, output: dict[str, object]) -> dict[str, object]:
        return output


if __name__ == "__main__":
    server = ls.LitServer(OnnxAPI(max_batch_size=64, batch_timeout=0.005), accelerator="cpu", workers_per_device=1)
    server.run(host="127.0.0.1", port=int(sys.argv[1]), num_api_servers=1, generate_client_file=False,
               log_level="warning")

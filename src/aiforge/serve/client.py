"""A Python client over the Open Inference Protocol v2, for aiforge or any v2 server."""

from __future__ import annotations

from typing import Any

import httpx

from aiforge.errors import AiforgeError, ServerError

__all__ = ["Client"]


class Client:
    """``Client(url).predict(name, texts)`` -> ``[{"label", "score", "scores"}]``."""

    def __init__(self, url: str = "http://127.0.0.1:8000", *, api_key: str | None = None,
                 timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)
        self._labels: dict[str, list[str]] = {}

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise AiforgeError(f"cannot reach {self._http.base_url}{path}: {exc}") from exc
        if response.status_code >= 400:
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text
            raise ServerError(response.status_code, message)
        return response.json()

    def ready(self) -> bool:
        """Whether every model on the server is loaded."""
        try:
            return bool(self._http.get("/v2/health/ready").status_code == 200)
        except httpx.HTTPError:
            return False

    def metadata(self, name: str) -> dict[str, Any]:
        """The v2 model metadata (inputs, outputs, versions, labels)."""
        result: dict[str, Any] = self._call("GET", f"/v2/models/{name}")
        return result

    def predict(self, name: str, texts: list[str], *, version: str | None = None) -> list[dict[str, Any]]:
        """Label, score and per-label probabilities for each text.

        Raises:
            ServerError: the server refused the request (status and message kept).
        """
        path = f"/v2/models/{name}" + (f"/versions/{version}" if version else "") + "/infer"
        body = {"inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}]}
        result = self._call("POST", path, json=body)
        outputs = {o["name"]: o for o in result["outputs"]}
        if name not in self._labels:
            self._labels[name] = list(self.metadata(name)["parameters"]["labels"])
        labels = self._labels[name]
        k = len(labels)
        probs = outputs["probabilities"]["data"]
        return [
            {"label": lab, "score": score, "scores": dict(zip(labels, probs[i * k:(i + 1) * k], strict=True))}
            for i, (lab, score) in enumerate(zip(outputs["label"]["data"], outputs["score"]["data"], strict=True))
        ]

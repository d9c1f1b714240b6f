"""A Python client for an aiforge server: one method per route of each kind, typed results.

``Client(url).predict(name, items)`` classifies texts, tabular records or images;
``classify_images``, ``recommend``, ``similar``, ``chat``, ``embed`` and the session methods
reach the other kinds' routes. A refusal raises :class:`~aiforge.errors.ServerError` with the
server's status and message (from either error shape the server answers).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from aiforge.bundle.runtime import Prediction
from aiforge.errors import AiforgeError, ServerError

__all__ = ["ChatAnswer", "Client", "ImagePrediction", "Recommendation", "Recommendations"]


@dataclass(frozen=True)
class ImagePrediction:
    """One uploaded image's top label and its ``top`` (label, score) pairs."""

    image: str
    label: str
    score: float
    top: list[tuple[str, float]]


@dataclass(frozen=True)
class Recommendation:
    """One recommended (or similar) item, with its rank, score and metadata."""

    item: str | int
    score: float
    rank: int
    metadata: dict[str, Any]


@dataclass(frozen=True)
class Recommendations:
    """A ranking for a user; ``cold_start`` is None for a known user, else ``items`` or ``popularity``."""

    user: str | int | None
    cold_start: str | None
    items: list[Recommendation]


@dataclass(frozen=True)
class ChatAnswer:
    """A chat answer: its text, why it ended, the passages it cites and how it was decided."""

    text: str
    finish_reason: str
    citations: list[dict[str, Any]]
    kind: str
    intent: str | None
    session_id: str | None
    usage: dict[str, int] = field(default_factory=dict)


def _message(response: httpx.Response) -> str:
    try:
        error = response.json().get("error", response.text)
    except (ValueError, AttributeError):
        return response.text
    if isinstance(error, dict):  # the OpenAI routes' shape
        return str(error.get("message", error))
    return str(error)


def _image_bytes(image: bytes | str | Path) -> tuple[str, bytes]:
    if isinstance(image, bytes):
        return "image", image
    path = Path(image)
    try:
        return path.name, path.read_bytes()
    except OSError as exc:
        raise AiforgeError(f"cannot read image {path}: {exc.strerror}") from exc


def _ranked(rows: list[dict[str, Any]]) -> list[Recommendation]:
    return [Recommendation(r["item"], float(r["score"]), int(r["rank"]), dict(r.get("metadata") or {})) for r in rows]


class Client:
    """``Client(url, api_key=...)``: typed calls to every route of an aiforge server."""

    def __init__(self, url: str = "http://127.0.0.1:8000", *, api_key: str | None = None,
                 timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

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
            raise ServerError(response.status_code, _message(response))
        return response.json()

    # ----- the server ---------------------------------------------------------------------

    def ready(self) -> bool:
        """Whether every model on the server is loaded."""
        try:
            return bool(self._http.get("/v2/health/ready").status_code == 200)
        except httpx.HTTPError:
            return False

    def models(self) -> list[dict[str, Any]]:
        """A summary of each model served (name, version, task, ...)."""
        return list(self._call("GET", "/v1/models")["models"])

    def metadata(self, name: str) -> dict[str, Any]:
        """The v2 model metadata (inputs, outputs, versions, labels)."""
        result: dict[str, Any] = self._call("GET", f"/v2/models/{name}")
        return result

    # ----- classifiers: text, tabular, image ------------------------------------------------

    def predict(self, name: str, items: Sequence[str | dict[str, Any] | bytes], *, version: str | None = None,
                top_k: int | None = None) -> list[Prediction]:
        """Label, score and per-label probabilities for each item, over the v2 protocol: texts, tabular
        records (dicts of field values, sent as the ``records`` tensor) or encoded images (bytes, sent
        base64-encoded), as the model's task takes them. ``top_k`` keeps the k most probable labels in
        ``scores``.

        Raises:
            ServerError: the server refused the request (status and message kept).
        """
        metadata = self.metadata(name)
        if all(isinstance(i, dict) for i in items):
            tensor: dict[str, Any] = {"name": "records", "datatype": "BYTES", "shape": [len(items)],
                                      "data": [json.dumps(i) for i in items]}
        else:
            data = [base64.b64encode(i).decode("ascii") if isinstance(i, bytes) else i for i in items]
            tensor = {"name": metadata["inputs"][0]["name"], "datatype": "BYTES", "shape": [len(items)], "data": data}
        path = f"/v2/models/{name}" + (f"/versions/{version}" if version else "") + "/infer"
        result = self._call("POST", path, json={"inputs": [tensor]})
        outputs = {o["name"]: o for o in result["outputs"]}
        labels = list(metadata["parameters"]["labels"])
        k = len(labels)
        probs = outputs["probabilities"]["data"]
        preds = []
        for i, (label, score) in enumerate(zip(outputs["label"]["data"], outputs["score"]["data"], strict=True)):
            scores = dict(zip(labels, probs[i * k:(i + 1) * k], strict=True))
            if top_k is not None:
                scores = dict(sorted(scores.items(), key=lambda kv: -kv[1])[:top_k])
            preds.append(Prediction(label, float(score), scores))
        return preds

    def classify_images(self, name: str, images: Sequence[bytes | str | Path], *,
                        top_k: int | None = None) -> list[ImagePrediction]:
        """Upload images (bytes or file paths) to an image model; the top labels of each, in order."""
        files = [("files", _image_bytes(image)) for image in images]
        data = {"top_k": str(top_k)} if top_k is not None else None
        result = self._call("POST", f"/v1/models/{name}/classify", files=files, data=data)
        return [ImagePrediction(p["image"], p["label"], float(p["score"]),
                                [(t["label"], float(t["score"])) for t in p["top"]]) for p in result["predictions"]]

    # ----- recommendations -----------------------------------------------------------------

    def recommend(self, name: str, *, user: str | int | None = None, items: Sequence[str | int] | None = None,
                  k: int = 10, exclude_seen: bool = True, filter: dict[str, Any] | None = None) -> Recommendations:
        """Top-k items for a known ``user``, a new user's liked ``items``, or (neither) the most popular."""
        body: dict[str, Any] = {"user": user, "k": k, "exclude_seen": exclude_seen}
        if items is not None:
            body["items"] = list(items)
        if filter is not None:
            body["filter"] = filter
        result = self._call("POST", f"/v1/models/{name}/recommend", json=body)
        return Recommendations(result["user"], result["cold_start"], _ranked(result["recommendations"]))

    def similar(self, name: str, item: str | int, *, k: int = 10,
                filter: dict[str, Any] | None = None) -> list[Recommendation]:
        """The items most liked together with ``item``."""
        body: dict[str, Any] = {"item": item, "k": k}
        if filter is not None:
            body["filter"] = filter
        return _ranked(self._call("POST", f"/v1/models/{name}/similar", json=body)["similar"])

    # ----- chat ----------------------------------------------------------------------------

    def chat(self, name: str, message: str | list[dict[str, Any]], *, session_id: str | None = None,
             max_tokens: int | None = None, stop: str | list[str] | None = None,
             temperature: float | None = None) -> ChatAnswer:
        """Ask a chat model (a question, or OpenAI-style messages); intents and their actions answer too."""
        messages = [{"role": "user", "content": message}] if isinstance(message, str) else message
        body: dict[str, Any] = {"model": name, "messages": messages}
        for key, value in (("session_id", session_id), ("max_tokens", max_tokens), ("stop", stop),
                           ("temperature", temperature)):
            if value is not None:
                body[key] = value
        result = self._call("POST", "/v1/chat/completions", json=body)
        choice = result["choices"][0]
        info = result.get("aiforge") or {}
        return ChatAnswer(choice["message"]["content"], choice["finish_reason"], list(result.get("citations") or []),
                          str(info.get("kind")), info.get("intent"), info.get("session_id"), dict(result["usage"]))

    def embed(self, name: str, texts: Sequence[str]) -> np.ndarray:
        """Unit-length embeddings of ``texts`` with a chat model's encoder, one row per text."""
        result = self._call("POST", "/v1/embeddings", json={"model": name, "input": list(texts)})
        rows = sorted(result["data"], key=lambda d: d["index"])
        return np.asarray([r["embedding"] for r in rows], dtype=np.float32)

    def create_session(self, name: str | None = None) -> str:
        """A new server-side conversation for this API key; pass its id as ``chat(..., session_id=)``."""
        return str(self._call("POST", "/v1/chat/sessions", json={"model": name} if name else {})["id"])

    def session(self, session_id: str) -> list[dict[str, str]]:
        """The session's messages, oldest first."""
        return list(self._call("GET", f"/v1/chat/sessions/{session_id}")["messages"])

    def delete_session(self, session_id: str) -> None:
        """Delete the session and its messages."""
        self._call("DELETE", f"/v1/chat/sessions/{session_id}")

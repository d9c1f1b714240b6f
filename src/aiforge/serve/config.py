"""Server settings, one typed object shared by the CLI, the Python API and the app factory."""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aiforge.errors import AiforgeError
from aiforge.serve.spec_settings import bundle_serve_values

if TYPE_CHECKING:
    from aiforge.bundle.runtime import ItemLimits

__all__ = ["HOST_ENV", "ApiKeys", "ServerConfig", "presented_key", "server_config"]

HOST_ENV = "AIFORGE_HOST"  # the operator's bind address when --host is not given


class ServerConfig(BaseModel):
    """Limits and batching settings; every bound is in the type."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, lt=65536)
    max_batch_size: int = Field(default=64, gt=0, le=1024)
    max_wait_ms: float = Field(default=5.0, ge=0, le=1000)
    max_queue_items: int = Field(default=2048, gt=0)
    batch_concurrency: int = Field(default=1, gt=0, le=16)
    threads: int | None = Field(default=None, gt=0)
    # the bundle's onnxruntime graph optimization level (the runtime reads it from the bundle; shown here)
    graph_optimization_level: str | None = Field(default=None, pattern="^(basic|extended|all)$")
    request_timeout_s: float = Field(default=30.0, gt=0)
    max_body_bytes: int = Field(default=1 << 20, gt=0)
    max_inputs: int = Field(default=256, gt=0)
    max_text_chars: int = Field(default=10_000, gt=0)
    max_image_bytes: int = Field(default=8 << 20, gt=0)
    max_image_pixels: int = Field(default=40_000_000, gt=0)
    precision: str = Field(default="auto", pattern="^(auto|fp32|int8|int8-only)$")
    api_key_file: Path | None = None
    access_log: bool = True
    chat_max_in_flight: int = Field(default=64, gt=0)  # chat answers being computed; 503 above
    # Over chat_max_in_flight a request waits this long for a slot (at most chat_max_in_flight waiting).
    chat_queue_wait_s: float = Field(default=2.0, ge=0, le=60)
    chat_log_text: bool = False  # the chat log line also carries the question, redacted (else lengths only)
    # With API keys, /metrics, /docs and /openapi.json need a key too unless this is set.
    public_docs_metrics: bool = False
    # Slow clients: headers and body each have a deadline (408 after), idle keep-alive connections close.
    header_timeout_s: float = Field(default=10.0, gt=0, le=600)
    body_timeout_s: float = Field(default=10.0, gt=0, le=3600)
    keep_alive_s: int = Field(default=5, gt=0, le=600)
    max_header_bytes: int = Field(default=16 << 10, ge=1024, le=1 << 20)  # 431 above
    max_connections: int = Field(default=1024, gt=0)  # open connections; 503 + Retry-After above
    # Per client (API key, or address without keys): a token bucket of rate_burst requests refilled at
    # rate_limit per second; 429 + Retry-After beyond it. None: no limit.
    rate_limit: float | None = Field(default=None, gt=0)
    rate_burst: int | None = Field(default=None, gt=0)

    def item_limits(self) -> ItemLimits:
        """The per-item limits a runtime's ``parse_items`` applies."""
        from aiforge.bundle.runtime import ItemLimits  # lazy: numpy loads in the preload thread, not here

        return ItemLimits(max_inputs=self.max_inputs, max_text_chars=self.max_text_chars,
                          max_image_bytes=self.max_image_bytes, max_image_pixels=self.max_image_pixels)


def presented_key(*, authorization: str | None, x_api_key: str | None) -> str | None:
    """The key a request presents: ``X-API-Key``, else ``Authorization: Bearer KEY``, else None."""
    if x_api_key is not None:
        return x_api_key
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return None


class ApiKeys:
    """API keys kept only as sha256 hashes; compared in constant time."""

    def __init__(self, hashes: list[bytes]) -> None:
        self._hashes = hashes

    @classmethod
    def from_file(cls, path: Path) -> ApiKeys:
        """One key per line (blank lines and ``#`` comments ignored).

        Raises:
            AiforgeError: the file is missing or holds no key.
        """
        if not path.is_file():
            raise AiforgeError(f"{path}: API key file not found.")
        keys = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        keys = [k for k in keys if k and not k.startswith("#")]
        if not keys:
            raise AiforgeError(f"{path}: no API key in the file (one key per line).")
        return cls([hashlib.sha256(k.encode()).digest() for k in keys])

    def check(self, presented: str | None) -> bool:
        """True when ``presented`` is one of the keys; time does not depend on which or where."""
        if not presented:
            return False
        digest = hashlib.sha256(presented.encode()).digest()
        found = False
        for h in self._hashes:
            found |= hmac.compare_digest(digest, h)
        return found


def server_config(bundles: list[str], *, home: str | Path | None = None,
                  from_bundle: Mapping[str, Any] | None = None, **given: Any) -> ServerConfig:
    """Settings for serving ``bundles``: values given (not None) win, then the first bundle's
    spec ``serve`` block (max_batch_size, max_wait_ms, port, precision, intra_op_threads as ``threads``,
    graph_optimization_level), then defaults.

    The bind address comes only from ``host=`` (``--host``), else ``$AIFORGE_HOST``, else 127.0.0.1:
    a bundle's ``serve.host`` is ignored, so a bundle cannot open a server to every interface.
    ``from_bundle``: the first bundle's values when the caller has read them already
    (:func:`~aiforge.serve.spec_settings.bundle_serve_values`), else they are read here.

    Raises:
        AiforgeError: a value is out of bounds (names the option).
    """

    values = dict(from_bundle) if from_bundle is not None else bundle_serve_values(bundles, home=home)
    if os.environ.get(HOST_ENV):
        values["host"] = os.environ[HOST_ENV]
    values.update({k: v for k, v in given.items() if v is not None})
    if "max_batch_size" in values:
        values["max_queue_items"] = max(values.get("max_queue_items", 2048), values["max_batch_size"])
    try:
        return ServerConfig(**values)
    except ValidationError as exc:
        problems = "; ".join(f"--{'-'.join(str(p) for p in e['loc']).replace('_', '-')}: {e['msg']}"
                             for e in exc.errors())
        raise AiforgeError(f"invalid server settings: {problems}.") from exc

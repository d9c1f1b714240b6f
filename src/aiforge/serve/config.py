"""Server settings, one typed object shared by the CLI, the Python API and the app factory."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from aiforge.errors import AiforgeError

__all__ = ["ApiKeys", "ServerConfig"]


class ServerConfig(BaseModel):
    """Limits and batching settings; every bound is in the type."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, lt=65536)
    max_batch_size: int = Field(default=32, gt=0, le=1024)
    max_wait_ms: float = Field(default=5.0, ge=0, le=1000)
    max_queue_items: int = Field(default=2048, gt=0)
    batch_concurrency: int = Field(default=2, gt=0, le=16)
    threads: int | None = Field(default=None, gt=0)
    request_timeout_s: float = Field(default=30.0, gt=0)
    max_body_bytes: int = Field(default=1 << 20, gt=0)
    max_inputs: int = Field(default=256, gt=0)
    max_text_chars: int = Field(default=10_000, gt=0)
    precision: str = Field(default="auto", pattern="^(auto|fp32|int8)$")
    api_key_file: Path | None = None
    access_log: bool = True


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

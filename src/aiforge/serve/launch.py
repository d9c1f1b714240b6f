"""What ``aiforge serve`` does, and the quick reading of a plain ``aiforge serve`` command line.

:func:`serve_bundles` is the one function behind the command: it starts loading the bundles in the
background (:mod:`aiforge.serve.preload`) before the server settings (pydantic) and the web stack
(FastAPI) are imported, then builds the settings and serves. The typer command calls it, and so does
the console entry point (:mod:`aiforge.cli`) when :func:`read_plain_serve` understands the whole
command line: then typer, rich and every kind's command module are never imported (a fifth of the
server's start-up). Anything the quick reading does not fully understand (help, another command, Ray,
an unknown option, a value typer would have to convert or refuse) is left to typer, so help, errors
and options behave exactly as the typer command; a test keeps :data:`OPTIONS` equal to its options.
This module imports nothing heavy.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiforge.scale.options import ScaleOptions

__all__ = ["FLAGS", "OPTIONS", "PlainServe", "read_plain_serve", "serve_bundles"]

_INT = re.compile(r"[0-9]+")
_FLOAT = re.compile(r"[0-9]+(\.[0-9]*)?|\.[0-9]+")


def _int(text: str) -> int | None:
    return int(text) if _INT.fullmatch(text) else None


def _float(text: str) -> float | None:
    return float(text) if _FLOAT.fullmatch(text) else None


def _text(text: str) -> str | None:
    return text or None


def _path(text: str) -> Path | None:
    return Path(text) if text else None


# ``aiforge serve``'s options that take a value and set a server setting: option -> (ServerConfig
# field, reader). A reader returns None for what it does not read exactly as typer would (a sign, a
# space, an exponent...): the whole command line then goes to typer.
OPTIONS: dict[str, tuple[str, Any]] = {
    "--host": ("host", _text), "--port": ("port", _int), "--max-batch-size": ("max_batch_size", _int),
    "--max-wait-ms": ("max_wait_ms", _float), "--max-queue-items": ("max_queue_items", _int),
    "--batch-concurrency": ("batch_concurrency", _int), "--threads": ("threads", _int),
    "--timeout": ("request_timeout_s", _float), "--max-inputs": ("max_inputs", _int),
    "--max-text-chars": ("max_text_chars", _int), "--max-body-bytes": ("max_body_bytes", _int),
    "--precision": ("precision", _text), "--api-key-file": ("api_key_file", _path),
    "--rate-limit": ("rate_limit", _float), "--rate-burst": ("rate_burst", _int),
    "--header-timeout": ("header_timeout_s", _float), "--body-timeout": ("body_timeout_s", _float),
    "--max-connections": ("max_connections", _int),
}
# Its options that take no value: option -> (ServerConfig field, value).
FLAGS: dict[str, tuple[str, bool]] = {
    "--access-log": ("access_log", True), "--no-access-log": ("access_log", False),
    "--public-docs-metrics": ("public_docs_metrics", True), "--no-public-docs-metrics": ("public_docs_metrics", False),
}
# What the typer command passes when a flag is not given (every other option: None, not set).
_FLAG_DEFAULTS = {"access_log": True, "public_docs_metrics": False}


@dataclass(frozen=True)
class PlainServe:
    """A plain ``aiforge serve`` command line, read: the bundles, the settings given, the registry home."""

    bundles: tuple[str, ...]
    settings: Mapping[str, Any]
    home: Path | None = None


def read_plain_serve(argv: Sequence[str]) -> PlainServe | None:
    """``aiforge serve BUNDLE... [--option VALUE | --option=VALUE | --flag]...`` (``argv`` without the
    program) as typer would read it, or None when it is anything else or anything typer should decide."""
    if not argv or argv[0] != "serve":
        return None
    bundles: list[str] = []
    settings: dict[str, Any] = dict(_FLAG_DEFAULTS)
    home: Path | None = None
    tokens = iter(argv[1:])
    for token in tokens:
        if not token.startswith("-"):
            bundles.append(token)
            continue
        name, eq, value = token.partition("=")
        if name in FLAGS and not eq:
            field, flag = FLAGS[name]
            settings[field] = flag
            continue
        if name != "--home" and name not in OPTIONS:
            return None  # help, Ray's options, short or unknown options: typer's
        if not eq:
            value = next(tokens, "")
        if value.startswith("-"):
            return None  # typer would take it as the value; leave that, and its message, to typer
        if name == "--home":
            home = _path(value)
            if home is None:
                return None
            continue
        field, reader = OPTIONS[name]
        read = reader(value)
        if read is None:
            return None
        settings[field] = read
    if not bundles:
        return None
    return PlainServe(tuple(bundles), settings, home)


def serve_bundles(bundles: Sequence[str], *, settings: Mapping[str, Any], home: str | Path | None = None,
                  backend: str = "local", scale: ScaleOptions | None = None) -> None:
    """Serve ``bundles`` as ``aiforge serve`` does; ``settings``: the ServerConfig fields given (None: unset).

    Locally, the bundles start loading first, with the precision and threads the settings will have
    (given, else the first bundle's spec ``serve`` block, else the defaults), so the loading overlaps the
    imports of pydantic, FastAPI and uvicorn.

    Raises:
        AiforgeError: a setting is out of bounds, no model could be loaded, or (ray) Ray is missing.
    """
    # OpenBLAS (numpy's) busy-waits in its worker threads for ~0.1 s of CPU after numpy is imported and
    # after each call: at start-up that takes a core from the loading and the imports. Servers rarely call
    # it (onnxruntime runs the graphs), so its threads sleep at once; an operator's own setting wins.
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
    from aiforge.serve.spec_settings import bundle_serve_values

    spec = bundle_serve_values(bundles, home=home)  # read once: the preload's precision and threads, the settings
    preload = None
    if backend == "local":
        from aiforge.serve.preload import Preload

        preload = Preload(bundles, precision=settings.get("precision") or spec.get("precision") or "auto",
                          threads=settings.get("threads") or spec.get("threads"), home=home)
    from aiforge.serve.backends import serve as serve_with
    from aiforge.serve.config import server_config

    config = server_config(list(bundles), home=home, from_bundle=spec, **settings)
    serve_with(bundles, backend=backend, config=config, scale=scale, home=home, preload=preload)

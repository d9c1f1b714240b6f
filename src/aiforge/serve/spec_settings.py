"""What a bundle's spec ``serve`` block sets for its server, read without pydantic.

:func:`aiforge.serve.config.server_config` builds the server's settings from it, and the preload that
``aiforge serve`` starts before pydantic is imported (:mod:`aiforge.serve.preload`) reads the same values,
so both agree on the precision and threads a bundle is loaded with.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiforge.errors import AiforgeError

__all__ = ["FROM_BUNDLE", "bundle_serve_values"]

# What a bundle's spec ``serve`` block may set: its port, batching and the size limits its inputs need
# (image bundles take larger bodies). Never the host, keys, timeouts or rate limits: a bundle does not
# choose where a server listens or how it defends itself.
FROM_BUNDLE = ("port", "max_batch_size", "max_wait_ms", "precision", "max_body_bytes", "max_image_bytes",
               "max_image_pixels", "intra_op_threads", "graph_optimization_level")
_RENAMED = {"intra_op_threads": "threads"}  # spec serve key -> ServerConfig field


def bundle_serve_values(bundles: Sequence[str | Path], *, home: str | Path | None = None) -> dict[str, Any]:
    """The server settings the first bundle's spec ``serve`` block sets, by ``ServerConfig`` field name.

    The manifest is read without checking the files (loading does that); a bundle that cannot be read
    sets nothing, since the server reports it itself, with its own message.
    """
    from aiforge.bundle.format import read_manifest
    from aiforge.bundle.registry import Registry

    try:
        manifest = read_manifest(Registry(home).resolve(bundles[0]), verify=False)
        spec_serve = manifest.extra.get("spec", {}).get("serve", {})
        return {_RENAMED.get(k, k): v for k, v in spec_serve.items() if k in FROM_BUNDLE and v is not None}
    except (AiforgeError, IndexError, AttributeError):
        return {}

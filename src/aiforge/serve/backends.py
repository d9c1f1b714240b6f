"""Which engine serves: this process (``local``, uvicorn) or Ray Serve (``ray``) — the one dispatcher.

Both ``aiforge serve`` and :func:`aiforge.serve_bundles`/``App.serve`` call :func:`serve`; this module
imports nothing heavy, so the plain server's start-up loads neither Ray nor the training API.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from aiforge.errors import AiforgeError

if TYPE_CHECKING:
    from aiforge.scale.options import ScaleOptions
    from aiforge.serve.config import ServerConfig
    from aiforge.serve.preload import Preload

__all__ = ["BACKENDS", "serve"]

BACKENDS = ("local", "ray")


def serve(bundles: Sequence[str | Path], *, backend: str = "local", config: ServerConfig | None = None,
          scale: ScaleOptions | None = None, home: str | Path | None = None, preload: Preload | None = None) -> None:
    """Serve bundles over HTTP until SIGINT/SIGTERM: in this process (``local``) or on Ray Serve (``ray``).

    Both serve the same routes; ``scale`` (replicas, autoscaling, the cluster) applies to ``ray``;
    ``preload`` (bundles already loading in this process) to ``local``.

    Raises:
        AiforgeError: an unknown backend, no model could be loaded, or (ray) Ray is missing or the
            cluster unreachable.
    """
    if backend == "ray":
        # lazy: Ray is imported only for --backend ray
        from aiforge.scale.serving import serve_ray

        serve_ray(bundles, config=config, options=scale, home=home)
    elif backend == "local":
        # lazy: fastapi/uvicorn stay out of `import aiforge`
        from aiforge.serve.app import serve as serve_here

        serve_here(bundles, config=config, home=home, preload=preload)
    else:
        raise AiforgeError(f"backend {backend!r}: expected local or ray.")

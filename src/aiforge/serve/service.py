"""ModelService: one loaded Runtime behind its own Batcher; the Models table a server holds.

Every route finds its model with :meth:`Models.get`; a kind's route passes ``kind=`` (its
Runtime class), so a model of another kind is refused the same way on every route: a 400
``model 'X' is a <kind> model; <route> needs a <kind> model``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar, cast, overload

import numpy as np

from aiforge.bundle.runtime import Runtime
from aiforge.errors import InputError
from aiforge.serve.batching import Batcher, Overloaded
from aiforge.serve.config import ServerConfig
from aiforge.serve.errors import ApiError
from aiforge.serve.metrics import ServerMetrics

__all__ = ["ModelService", "Models"]

RuntimeT = TypeVar("RuntimeT", bound=Runtime)

_log = logging.getLogger("aiforge.server")


class ModelService(Generic[RuntimeT]):
    """A Runtime plus a Batcher, with the server's limits applied to every request."""

    def __init__(self, runtime: RuntimeT, *, config: ServerConfig, executor: Executor,
                 metrics: ServerMetrics) -> None:
        self.runtime = runtime
        self.config = config
        name = runtime.name

        def on_batch(size: int, seconds: float) -> None:
            metrics.batch_size.labels(model=name).observe(size)
            metrics.batch_latency.labels(model=name).observe(seconds)
            metrics.items.labels(model=name).inc(size)

        self.batcher = Batcher(runtime.run_batch, executor=executor, max_batch_size=config.max_batch_size,
                               max_wait_ms=config.max_wait_ms, max_queue_items=config.max_queue_items,
                               concurrency=config.batch_concurrency, on_batch=on_batch)
        self._card_summary = _intended_use(runtime.path / "card.md")

    @property
    def name(self) -> str:
        return self.runtime.name

    def parse_items(self, items: list[Any], field_name: str) -> list[Any]:
        """Apply the count limit, then the runtime's own checks (type, length, image limits).

        Raises:
            ApiError: 422 naming the item and the limit or type that was broken.
        """
        if not items:
            raise ApiError(422, f"{field_name}: at least one input is required")
        limit = min(self.config.max_inputs, self.config.max_queue_items)  # more could never be queued
        if len(items) > limit:
            raise ApiError(422, f"{field_name}: {len(items)} inputs, over the limit of {limit} per request")
        try:
            return self.runtime.parse_items(items, field_name, self.config.item_limits())
        except InputError as exc:
            raise ApiError(422, str(exc)) from exc

    async def run(self, items: list[Any]) -> Sequence[Any]:
        """The runtime's ``run_batch`` outputs for parsed ``items``, through the batcher, within the timeout.

        A request batched with a failing one still gets its outputs: the batcher runs a failed
        batch again in halves, so only the failing request gets the error.

        Raises:
            ApiError: 422 when the runtime refused these items while running them (an ``InputError``:
                the client's fault, though ``parse_items`` let it through), 503 when overloaded (with
                Retry-After), 504 on timeout, 500 when the model failed on them.
        """
        try:
            return await asyncio.wait_for(self.batcher.submit(items), self.config.request_timeout_s)
        except InputError as exc:
            raise ApiError(422, str(exc)) from exc
        except Overloaded as exc:
            raise ApiError(503, str(exc), headers={"Retry-After": str(int(np.ceil(exc.retry_after)))}) from exc
        except TimeoutError as exc:
            raise ApiError(504, f"prediction took longer than {self.config.request_timeout_s:g} s") from exc
        except Exception as exc:
            # The model failed on this request alone (the batcher isolated it). Answered as an ApiError, not
            # left to the catch-all handler: that one re-raises into uvicorn, which then closes the
            # connection, and other requests on it (keep-alive) failed with a dropped connection.
            _log.error("model %r failed on a request of %d item(s)", self.name, len(items), exc_info=exc)
            raise ApiError(500, f"internal server error: model {self.name!r} failed on this request") from exc

    async def predict_proba(self, items: list[Any]) -> np.ndarray:
        """A classifier's probability rows for parsed ``items`` (:meth:`run`, as one array).

        Raises:
            ApiError: 422 for items the runtime refused, 503 when overloaded (with Retry-After), 504 on timeout,
                500 when the model failed on them.
        """
        return np.asarray(await self.run(items))  # no copy: a classifier's run_batch is already an array

    def summary(self) -> dict[str, Any]:
        """The Runtime's description plus the card's intended-use paragraph, for listings."""
        return {**self.runtime.describe(), "card": self._card_summary}


def _intended_use(card: Path) -> str:
    """The first paragraph under ``## Intended use`` in a model card, or ''."""
    if not card.is_file():
        return ""
    text = card.read_text(encoding="utf-8")
    if "## Intended use" not in text:
        return ""
    return text.split("## Intended use", 1)[1].strip().split("\n\n", 1)[0].strip()


@dataclass
class Models:
    """The models a server was asked to serve; filled in when loading finishes.

    ``ready`` once every source loaded; ``errors`` names each source that did not, and why.
    """

    sources: list[str | Path | Runtime]
    services: dict[str, ModelService[Runtime]] = field(default_factory=dict)
    ready: bool = False
    loaded: bool = False  # loading has finished, whether or not every source loaded
    errors: dict[str, str] = field(default_factory=dict)

    def finish(self, services: dict[str, ModelService[Runtime]], errors: dict[str, str]) -> None:
        """Record what loading gave: the services, and each source that failed with its error."""
        self.services, self.errors = services, errors
        self.ready, self.loaded = not errors, True

    def health(self) -> dict[str, Any]:
        """``{"ready": …}`` plus, once a source failed to load, ``errors``: [{"source", "error"}]."""
        body: dict[str, Any] = {"ready": self.ready}
        if self.errors:
            body["errors"] = [{"source": s, "error": e} for s, e in self.errors.items()]
        return body

    @overload
    def get(self, name: str, version: str | None = None) -> ModelService[Runtime]: ...

    @overload
    def get(self, name: str, version: str | None = None, *, kind: type[RuntimeT],
            route: str) -> ModelService[RuntimeT]: ...

    def get(self, name: str, version: str | None = None, *, kind: type[Runtime] | None = None,
            route: str = "this route") -> ModelService[Any]:
        """The service called ``name`` (and at ``version``, if given), of ``kind`` if given.

        ``kind`` is the Runtime class a kind's route needs; ``route`` names that route in the error.

        Raises:
            ApiError: 404 for an unknown model or version, 503 while loading (or, once a bundle failed
                to load, for a model not served, naming the failures), 400 for a model of another kind
                than ``kind``.
        """
        service = self.services.get(name)
        if service is None:
            if not self.loaded:
                raise ApiError(503, "models are still loading; retry shortly", headers={"Retry-After": "1"})
            if self.errors:  # the model asked for may be one that failed: say so rather than "not found"
                failed = "; ".join(f"{s}: {e}" for s, e in self.errors.items())
                raise ApiError(503, f"model {name!r} is not served; {len(self.errors)} bundle(s) failed to load "
                                    f"({failed}); served: {', '.join(sorted(self.services)) or 'none'}")
            raise ApiError(404, f"model {name!r} not found; served: {', '.join(sorted(self.services)) or 'none'}")
        if version is not None and version != service.runtime.version:
            raise ApiError(404, f"model {name!r} has no version {version!r}; served version is "
                                f"{service.runtime.version}")
        if kind is not None and not isinstance(service.runtime, kind):
            raise ApiError(400, f"model {name!r} is a {service.runtime.manifest.task} model; {route} needs a "
                                f"{kind.task} model")
        return cast(ModelService[Any], service)

"""ScaleOptions: how many replicas of each bundle, autoscaling bounds, the cluster to join.

It turns into Ray Serve deployment settings here, without importing Ray, so the CLI can check the
options before any cluster starts.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from aiforge.errors import AiforgeError
from aiforge.serve.config import ServerConfig

__all__ = ["ScaleOptions", "parse_autoscale", "scale_options"]


class ScaleOptions(BaseModel):
    """Replicas of each bundle's deployment and the limits of each replica."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    replicas: int = Field(default=1, gt=0, le=256)
    autoscale: tuple[int, int] | None = None  # (min, max) replicas; None: a fixed --replicas count
    target_ongoing_requests: float = Field(default=32.0, gt=0)  # the autoscaler's goal per replica
    ray_address: str | None = None  # None: start a local cluster
    # The HTTP ingress of a local cluster: Ray's HAProxy mode (replicas serve HTTP themselves, no Python proxy
    # hop: twice the throughput, docs/scale.md) or its Python proxy. Both answer a request lost with its replica
    # and a request over capacity 503 + Retry-After.
    ray_ingress: Literal["proxy", "haproxy"] = "haproxy"
    cpus_per_replica: float = Field(default=1.0, ge=0)
    # Requests in a replica at once; None: twice the batch size (at least the batch size, so batches can fill).
    max_ongoing_requests: int | None = Field(default=None, gt=0)
    # Requests the ingress holds per deployment once every replica is full; 503 + Retry-After beyond.
    max_queued_requests: int = Field(default=256, gt=0)
    retry_after_s: float = Field(default=1.0, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> ScaleOptions:
        if self.autoscale is not None:
            low, high = self.autoscale
            if low < 0 or high < 1 or low > high:
                raise ValueError(f"autoscale must be MIN:MAX with 0 <= MIN <= MAX and MAX >= 1, got {low}:{high}")
        return self

    def deployment_options(self, config: ServerConfig) -> dict[str, Any]:
        """Keyword arguments of ``serve.deployment(...).options`` for one bundle served with ``config``.

        Raises:
            AiforgeError: ``max_ongoing_requests`` is below the batch size (batches could never fill).
        """
        ongoing = self.max_ongoing_requests or 2 * config.max_batch_size
        if ongoing < config.max_batch_size:
            raise AiforgeError(f"max_ongoing_requests {ongoing} is below --max-batch-size {config.max_batch_size}; "
                               "a replica could never fill a batch. Raise it or lower the batch size.")
        options: dict[str, Any] = {
            "max_ongoing_requests": ongoing,
            "max_queued_requests": self.max_queued_requests,
            "backpressure_config": {"status_code": 503, "retry_after_s": self.retry_after_s},
            "ray_actor_options": {"num_cpus": self.cpus_per_replica},
            "health_check_period_s": 2.0,
            "health_check_timeout_s": 10.0,
            "graceful_shutdown_timeout_s": max(5.0, config.request_timeout_s),
            # Ray's per-request access log in each replica, on top of aiforge's own (ServerConfig.access_log)
            "logging_config": {"enable_access_log": False},
        }
        if self.autoscale is None:
            options["num_replicas"] = self.replicas
        else:
            low, high = self.autoscale
            options["num_replicas"] = "auto"
            options["autoscaling_config"] = {"min_replicas": low, "max_replicas": high,
                                             "initial_replicas": max(low, 1),
                                             "target_ongoing_requests": self.target_ongoing_requests}
        return options


def parse_autoscale(text: str | None) -> tuple[int, int] | None:
    """``MIN:MAX`` as a pair of ints (None stays None).

    Raises:
        AiforgeError: not two integers separated by a colon.
    """
    if text is None:
        return None
    low, sep, high = text.partition(":")
    try:
        if not sep:
            raise ValueError(text)
        return int(low), int(high)
    except ValueError as exc:
        raise AiforgeError(f"--autoscale {text!r}: expected MIN:MAX replicas, e.g. --autoscale 1:4.") from exc


def scale_options(**given: Any) -> ScaleOptions:
    """ScaleOptions from the values given (None: the default).

    Raises:
        AiforgeError: a value is out of bounds (names the option).
    """
    try:
        return ScaleOptions(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(f"--{'-'.join(str(p) for p in e['loc']).replace('_', '-') or 'autoscale'}: {e['msg']}"
                             for e in exc.errors())
        raise AiforgeError(f"invalid scale-out settings: {problems}.") from exc

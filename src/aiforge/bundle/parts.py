"""The export-and-register sequence, written once for every kind.

A kind's writer puts its graphs and its own files (tokenizer, index, report…) into the staging
folder and returns a :class:`BundleParts`; :func:`export_bundle` writes ``pipeline.json``,
``metrics.json`` and ``card.md`` from it, builds the manifest's ``extra`` (the same keys for every
kind, plus the kind's own) and registers the folder. A writer that raises leaves no staging
folder and registers nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiforge.bundle.cpu import int8_cpu
from aiforge.bundle.format import PIPELINE, BundleManifest
from aiforge.bundle.registry import BundleRecord, Registry
from aiforge.errors import BundleError, ExportError
from aiforge.version import __version__

if TYPE_CHECKING:
    from aiforge.audit.baseline import BaselineReport
    from aiforge.spec import BaseSpec

__all__ = ["PIPELINE", "BundleParts", "ExportResult", "Int8Parity", "Parity", "export_bundle"]

METRICS = "metrics.json"
CARD = "card.md"

# manifest ``extra`` keys the engine writes; a kind's own keys may not shadow them
_ENGINE_KEYS = frozenset({"aiforge_version", "baseline", "metrics", "parity", "spec"})


@dataclass(frozen=True)
class Int8Parity:
    """The gate an int8 copy of a graph went through (stored with an ``int8_`` prefix on each key)."""

    ok: bool
    top1_agreement: float
    min_agreement: float
    accuracy: float | None
    recipe: str | None
    details: Mapping[str, Any] = field(default_factory=dict)  # tries, fallback settings, dropped reason…
    # the CPU the gate ran on (bundle/cpu.int8_cpu: int8 sums exact or saturating); None: not recorded
    cpu: Mapping[str, Any] | None = field(default_factory=int8_cpu)

    def to_dict(self) -> dict[str, Any]:
        """The keys bundles store: ``int8_ok``, ``int8_top1_agreement``, … and each detail prefixed."""
        core = {"recipe": self.recipe, "top1_agreement": self.top1_agreement, "min_agreement": self.min_agreement,
                "accuracy": self.accuracy, "ok": self.ok, **({"cpu": dict(self.cpu)} if self.cpu else {})}
        return {f"int8_{k}": v for k, v in {**core, **self.details}.items()}


@dataclass(frozen=True)
class Parity:
    """The exported graph checked against the model it came from, on ``samples`` inputs, at export.

    ``max_abs_diff`` is the headline difference (probability, score or embedding); it is stored under
    ``diff_key`` and the sample count under ``samples_key``, the names each kind's bundles have always
    used, so ``to_dict`` gives the same JSON as before the record was typed.
    """

    samples: int
    max_abs_diff: float
    diff_key: str = "max_abs_diff"
    samples_key: str = "samples"
    int8: Int8Parity | None = None
    details: Mapping[str, Any] = field(default_factory=dict)  # the kind's other measurements, by JSON key

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, diff_key: str, samples_key: str = "samples") -> Parity:
        """The record ``to_dict`` wrote (``int8_`` keys become :class:`Int8Parity`).

        Raises:
            BundleError: ``raw`` lacks the sample count, the difference or an int8 gate field.
        """
        rest = dict(raw)
        try:
            samples, diff = int(rest.pop(samples_key)), float(rest.pop(diff_key))
            int8 = None
            if "int8_ok" in rest:
                q = {k.removeprefix("int8_"): rest.pop(k) for k in list(rest) if k.startswith("int8_")}
                int8 = Int8Parity(ok=bool(q.pop("ok")), top1_agreement=q.pop("top1_agreement"),
                                  min_agreement=q.pop("min_agreement"), accuracy=q.pop("accuracy"),
                                  recipe=q.pop("recipe"), cpu=q.pop("cpu", None), details=q)
        except KeyError as exc:
            raise BundleError(f"parity record lacks {exc}; it has {sorted(raw)}. Re-export the bundle.") from exc
        return cls(samples, diff, diff_key, samples_key, int8, rest)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored in ``manifest.json`` under ``parity``."""
        out = {self.samples_key: self.samples, self.diff_key: self.max_abs_diff, **self.details}
        return out | (self.int8.to_dict() if self.int8 is not None else {})


@dataclass(frozen=True)
class BundleParts:
    """What a kind's writer made in the staging folder, and what the engine writes and registers for it."""

    pipeline: Mapping[str, Any]  # pipeline.json: what the kind's runtime reads to serve the bundle
    metrics: Mapping[str, Any]  # metrics.json: the full evaluation
    card: str  # card.md
    parity: Parity
    headline: Mapping[str, float]  # the registry row's metrics and manifest ``metrics``
    extra: Mapping[str, Any] = field(default_factory=dict)  # the kind's own manifest keys (backbone, columns…)
    # the model against its simple baselines (audit/baseline.BaselineReport): written into metrics.json, the
    # card and the manifest under ``baseline``
    baseline: BaselineReport | None = None


@dataclass(frozen=True)
class ExportResult:
    """A registered bundle: where it is, its manifest and its parity record."""

    record: BundleRecord
    manifest: BundleManifest
    parity: Parity

    @property
    def path(self) -> Path:
        return self.record.path


def _write_json(path: Path, value: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(value, indent=2), encoding="utf-8")


def export_bundle(registry: Registry, spec: BaseSpec, write: Callable[[Path], BundleParts]) -> ExportResult:
    """Stage a bundle with ``write``, add its JSON and card files, and register it as the next version.

    Raises:
        ExportError: (from ``write``) export failed or parity did not hold; nothing is registered.
        ExportError: the writer's ``extra`` reuses a key the engine writes (a bug in the kind).
    """
    with registry.staging() as staged:
        parts = write(staged)
        if clash := _ENGINE_KEYS & set(parts.extra):
            raise ExportError(f"BundleParts.extra may not set {sorted(clash)}; the engine writes those keys.")
        baseline = parts.baseline.to_dict() if parts.baseline is not None else None
        _write_json(staged / PIPELINE, parts.pipeline)
        _write_json(staged / METRICS, {**parts.metrics, "baseline": baseline} if baseline else parts.metrics)
        card = parts.card.rstrip("\n") + "\n\n" + parts.baseline.markdown() if parts.baseline else parts.card
        (staged / CARD).write_text(card, encoding="utf-8")
    headline = dict(parts.headline)
    extra = {"aiforge_version": __version__, **parts.extra, "metrics": headline, "parity": parts.parity.to_dict(),
             "spec": spec.model_dump(mode="json")} | ({"baseline": baseline} if baseline else {})
    added = registry.add(staged, name=spec.name, task=spec.task, extra=extra, metrics=headline)
    return ExportResult(added.record, added.manifest, parts.parity)

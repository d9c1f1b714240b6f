"""The generic verbs ``eval`` and ``audit`` for any bundle, dispatched to its kind's ``checks`` row.

Each kind's row in ``tasks/registry.py`` may name a ``checks`` object (in ``tasks/<kind>/checks.py``,
torch-free) that follows :class:`KindChecks`: the gate rows of the kind, and how to evaluate,
audit and measure a loaded Runtime on data. The engine reaches it only through the kinds table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from aiforge.audit.gates import Gate, ReleaseGates
from aiforge.audit.report import CheckReport
from aiforge.bundle.runtime import Runtime
from aiforge.errors import BundleError
from aiforge.spec import BaseSpec
from aiforge.tasks.registry import get_kind, resolve

__all__ = ["KindChecks", "Measured", "audit_bundle", "checks_for", "evaluate_bundle", "gates_class", "stored_spec"]


@dataclass(frozen=True)
class Measured:
    """What a kind measured for ``ship``: its report on the data, a one-item call to time, gated features."""

    audit: dict[str, Any]
    probe: Callable[[], object]
    features: list[str] = field(default_factory=list)
    source: str = ""


class KindChecks(Protocol):
    """What ``aiforge eval``, ``audit`` and ``ship`` measure on a bundle of one kind."""

    gates: tuple[Gate, ...]  # the kind's own gate rows; size and latency (audit.gates.GATES) are everyone's

    def evaluate(self, rt: Runtime, data: Path, *, columns: Mapping[str, str]) -> CheckReport:
        """The kind's own metrics on a labelled file.

        Raises:
            DataError: the file cannot be evaluated (what is missing is named).
        """
        ...

    def audit(self, rt: Runtime, data: Path, *, sensitive: Sequence[str], output: Path) -> CheckReport:
        """Per-class / per-segment (and, with ``sensitive`` columns, per-group) report; files go in ``output``.

        Raises:
            DataError: the file lacks what the audit needs (named).
        """
        ...

    def measure(self, rt: Runtime, spec: BaseSpec, gates: ReleaseGates, data: Path | None) -> Measured:
        """The numbers the kind's gates read, on ``data`` or else the spec's test (or validation) split.

        Raises:
            DataError: no data to measure on, or the data is bad.
        """
        ...


def checks_for(rt: Runtime) -> KindChecks:
    """The ``checks`` object of the runtime's kind.

    Raises:
        BundleError: the kind has no checks row.
    """
    kind = get_kind(rt.manifest.task, where=str(rt.path))
    if kind.checks is None:
        raise BundleError(f"{rt.path}: {kind.name} bundles have no evaluation, audit or release gates yet.")
    checks: KindChecks = resolve(kind.checks)
    return checks


def stored_spec(rt: Runtime) -> BaseSpec:
    """The spec the bundle was trained from, as its kind's spec class (from ``manifest.extra["spec"]``).

    Raises:
        BundleError: the manifest holds no spec, or one this aiforge cannot read.
    """
    raw = rt.manifest.extra.get("spec")
    if not isinstance(raw, dict):
        raise BundleError(f"{rt.path}: the manifest stores no spec; re-export the bundle with this aiforge.")
    cls: type[BaseSpec] = resolve(get_kind(rt.manifest.task, where=str(rt.path)).spec)
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        raise BundleError(f"{rt.path}: the spec stored in the manifest no longer validates ({exc.errors()[0]['msg']} "
                          f"at {'.'.join(str(p) for p in exc.errors()[0]['loc'])}); re-export the bundle.") from exc


def gates_class(rt: Runtime) -> type[ReleaseGates]:
    """The gates block class of the runtime's kind (the type of its spec's ``gates`` field).

    Raises:
        BundleError: the kind's spec has no gates block.
    """
    cls: type[BaseSpec] = resolve(get_kind(rt.manifest.task, where=str(rt.path)).spec)
    field_info = cls.model_fields.get("gates")
    ann = field_info.annotation if field_info is not None else None
    if not (isinstance(ann, type) and issubclass(ann, ReleaseGates)):
        raise BundleError(f"{rt.path}: {rt.manifest.task} specs have no gates block.")
    return ann


def _runtime(bundle: str | Path | Runtime, home: str | Path | None) -> Runtime:
    return bundle if isinstance(bundle, Runtime) else Runtime.load(bundle, home=home)


def evaluate_bundle(bundle: str | Path | Runtime, data: str | Path, *, columns: Mapping[str, str] | None = None,
                    home: str | Path | None = None) -> CheckReport:
    """Score any bundle on a labelled file with its kind's own metrics (through the torch-free Runtime).

    ``columns`` maps a role ("text", "label", "path", "user", "item"…) to a column of the file.

    Raises:
        RegistryError: unknown bundle.
        BundleError: the kind cannot be evaluated.
        DataError: the file lacks what the kind needs.
    """
    rt = _runtime(bundle, home)
    return checks_for(rt).evaluate(rt, Path(data), columns=dict(columns or {}))


def audit_bundle(bundle: str | Path | Runtime, data: str | Path, *, sensitive: Sequence[str] | None = None,
                 output: str | Path | None = None, home: str | Path | None = None) -> CheckReport:
    """Audit any bundle on a labelled file: per-class / per-segment tables, per-group ones for ``sensitive``.

    Writes ``audit.json`` (and what else the kind writes, e.g. ``report.html``) into ``output``
    (default ``./audit-NAME``).

    Raises:
        RegistryError: unknown bundle.
        BundleError: the kind cannot be audited.
        DataError: the file lacks the label or a sensitive column (named).
    """
    rt = _runtime(bundle, home)
    folder = Path(output) if output is not None else Path(f"audit-{rt.name}")
    folder.mkdir(parents=True, exist_ok=True)
    report = checks_for(rt).audit(rt, Path(data), sensitive=list(sensitive or []), output=folder)
    report.write_json(folder / "audit.json")
    files = [folder / "audit.json", *[f for f in report.files if f != folder / "audit.json"]]
    return CheckReport(report.title, report.metrics, report.tables, report.lines, files)

"""What a model page shows: card, metrics, fairness, last ship gates, manifest and provenance.

Everything comes from the served bundle's own verified files and from the registry that holds it;
nothing here renders HTML (the page builds its DOM from this JSON with text nodes only).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from aiforge.bundle.registry import Registry
from aiforge.bundle.runtime import Runtime
from aiforge.errors import AiforgeError

__all__ = ["finite", "holding_registry", "model_info", "model_summary"]

_CARD = "card.md"
_METRICS = "metrics.json"
_AUDIT = "audit.json"
REPORT = "report.html"


def finite(value: Any) -> Any:
    """``value`` with every NaN/inf float replaced by None (strict JSON for the browser)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _provenance(extra: dict[str, Any], *, depth: int = 0, where: str = "") -> list[dict[str, Any]]:
    """Every record in the manifest that names a licence (backbone, encoder, data), with where it sits."""
    found: list[dict[str, Any]] = []
    for key, value in extra.items():
        if key == "spec" or not isinstance(value, dict):
            continue
        at = f"{where}.{key}" if where else key
        if "licence" in value or "license" in value:
            found.append({"role": at, "name": value.get("name") or value.get("source"),
                          "licence": value.get("licence") or value.get("license"),
                          "provenance": value.get("provenance")})
        elif depth < 2:
            found.extend(_provenance(value, depth=depth + 1, where=at))
    return found


def holding_registry(runtime: Runtime, registry: Registry) -> Registry | None:
    """The registry that holds the served folder: the server's, or the one the folder sits in (served by path)."""
    candidates = [registry]
    home = runtime.path.resolve().parents[2] if len(runtime.path.resolve().parents) > 2 else None
    if home is not None and (home / "registry.db").is_file() and home != registry.home.resolve():
        candidates.append(Registry(home))
    for candidate in candidates:
        try:
            record = candidate.get(runtime.name, runtime.version)
        except AiforgeError:
            continue
        if record.path.resolve() == runtime.path.resolve():
            return candidate
    return None


def _stage(runtime: Runtime, registry: Registry | None) -> str:
    if registry is None:
        return "unregistered"
    return registry.get(runtime.name, runtime.version).stage


def _fairness(audit: Any) -> dict[str, Any] | None:
    """Per sensitive feature: each group's rates and the differences, from the bundle's audit."""
    if not isinstance(audit, dict) or not isinstance(audit.get("features"), dict):
        return None
    out: dict[str, Any] = {}
    for feature, body in audit["features"].items():
        if isinstance(body, dict) and isinstance(body.get("groups"), dict):
            out[feature] = {"groups": body["groups"], "difference": body.get("difference", {}),
                            "ratio": body.get("ratio", {}),
                            "four_fifths": body.get("four_fifths", {})}
    return out or None


def _baseline(runtime: Runtime, metrics: Any) -> dict[str, Any] | None:
    """The model against its best simple baseline (``audit/baseline.py``): from metrics.json, else the manifest."""
    found = metrics.get("baseline") if isinstance(metrics, dict) else None
    if not isinstance(found, dict):
        found = runtime.manifest.extra.get("baseline")
    return found if isinstance(found, dict) else None


def model_summary(runtime: Runtime, server_registry: Registry) -> dict[str, Any]:
    """The home page's row: kind, version, stage, headline metrics, size, precision."""
    registry = holding_registry(runtime, server_registry)
    files = runtime.manifest.files
    summary: dict[str, Any] = finite({"name": runtime.name, "version": runtime.version, "task": runtime.manifest.task,
                   "precision": runtime.precision, "stage": _stage(runtime, registry),
                   "size_bytes": sum(int(f.get("size", 0)) for f in files.values()),
                   "metrics": runtime.manifest.extra.get("metrics", {}), "created": runtime.manifest.created})
    return summary


def model_info(runtime: Runtime, server_registry: Registry, examples: dict[str, Any]) -> dict[str, Any]:
    """Everything the model page shows, as strict JSON."""
    path = runtime.path
    card = path / _CARD
    registry = holding_registry(runtime, server_registry)
    ship = _read_json(registry.ship_record(runtime.name, runtime.version)) if registry is not None else None
    audit = _read_json(path / _AUDIT)
    metrics = _read_json(path / _METRICS)
    info: dict[str, Any] = finite({
        **model_summary(runtime, server_registry),
        "describe": runtime.describe(),
        "card": card.read_text(encoding="utf-8") if card.is_file() else "",
        "report_metrics": metrics,
        "fairness": _fairness(audit),
        "has_report": (path / REPORT).is_file(),
        "ship": ship,
        "manifest": {"format_version": runtime.manifest.format_version, "digest": runtime.manifest.digest,
                     "signed": runtime.manifest.signature is not None,
                     "files": [{"path": name, "size": int(f.get("size", 0)), "sha256": f.get("sha256")}
                               for name, f in sorted(runtime.manifest.files.items())]},
        "provenance": _provenance(runtime.manifest.extra),
        "parity": runtime.manifest.extra.get("parity"),
        "baseline": _baseline(runtime, metrics),
        "examples": examples,
    })
    return info

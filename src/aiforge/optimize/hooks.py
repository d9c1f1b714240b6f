"""What a kind gives ``aiforge optimize``: its parity items and the graphs (precision recipes) to try.

A kind opts in with an ``optimize`` entry in its registry row (``tasks/registry.py``) naming an object
with the two methods of :class:`OptimizeHooks`; kinds without one are refused with a message.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aiforge.bundle.format import BundleManifest

__all__ = ["Candidate", "OptimizeHooks"]


@dataclass(frozen=True)
class Candidate:
    """One precision recipe: the graph files to serve it with and the precision that loads it.

    ``graphs`` maps pipeline graph keys ("fp32", "int8") to files (the bundle's own or new ones
    written under the sweep's work folder); keys not named keep the bundle's file.
    """

    recipe: str
    precision: str
    graphs: dict[str, Path] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


class OptimizeHooks(Protocol):
    """A kind's part of the sweep."""

    def parity_items(self, *, bundle: Path, manifest: BundleManifest, data: Path | None, limit: int) -> list[Any]:
        """Up to ``limit`` request items (what ``Runtime.parse_items`` takes) of the bundle's parity set,
        re-read from the spec's data files as the export sampled them (``data`` overrides the file)."""
        ...

    def candidates(self, *, bundle: Path, pipeline: dict[str, Any], work: Path) -> Iterator[Candidate]:
        """The recipes to try, the bundle's fp32 graph first; built lazily (quantizing takes seconds),
        new graph files under ``work``."""
        ...

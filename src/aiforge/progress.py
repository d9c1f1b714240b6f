"""Progress bars (rich) that can be switched off for tests and pipes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

__all__ = ["Advance", "console", "progress_bar"]

console = Console(stderr=True)


class Advance(Protocol):
    def __call__(self, n: int = 1, *, info: str | None = None) -> None: ...


@contextmanager
def progress_bar(total: int, description: str, *, enabled: bool = True) -> Iterator[Advance]:
    """Yield ``advance(n, info=...)``; draws a rich bar on stderr when ``enabled``."""
    if not enabled:
        def noop(n: int = 1, *, info: str | None = None) -> None:
            return None

        yield noop
        return
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
        console=console, transient=False,
    ) as bar:
        task = bar.add_task(description, total=total, info="")

        def advance(n: int = 1, *, info: str | None = None) -> None:
            if info is None:
                bar.advance(task, n)
            else:
                bar.update(task, advance=n, info=info)

        yield advance

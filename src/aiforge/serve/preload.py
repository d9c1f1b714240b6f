"""Loading bundles in a background thread while the web stack is imported: the server's cold start.

``aiforge serve`` starts a :class:`Preload` before it imports FastAPI and uvicorn, so reading,
verifying and warming up the graphs (mostly native code in onnxruntime and tokenizers) overlaps
with importing and building the app. The app's lifespan then takes each Runtime, or the error
that loading it raised, exactly as if it had loaded it itself. This module imports no web stack,
and the runtime's modules (numpy, the kind's runtime, onnxruntime, tokenizers) load in the thread.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from aiforge.errors import AiforgeError

if TYPE_CHECKING:
    from aiforge.bundle.runtime import Runtime

__all__ = ["Preload"]


def _cpus() -> int:
    from aiforge.bundle.runtime import available_cpus

    return available_cpus()


class Preload:
    """Load and warm up ``sources`` (folders, ``NAME`` or ``NAME:VERSION``) in one background thread.

    ``take(source)`` waits for that source and returns its Runtime, or raises what loading raised.
    """

    def __init__(self, sources: Sequence[str | Path], *, precision: str = "auto", threads: int | None = None,
                 home: str | Path | None = None) -> None:
        self.sources = [str(s) for s in sources]
        # threads None: the CPUs this process may run on, counted when asked (the runtime's module loads
        # in the thread, not here)
        self.precision, self._threads, self.home = precision, threads, home
        self._results: dict[str, Runtime | BaseException] = {}
        self._done = threading.Event()
        # not a daemon: a process that exits while onnxruntime builds a session in this thread aborts (134),
        # so an exit (a bad setting found after the load began) waits for the load in progress
        self._thread = threading.Thread(target=self._run, name="aiforge-preload", daemon=False)
        self._thread.start()

    @property
    def threads(self) -> int:
        """The onnxruntime threads this preload loads with."""
        return self._threads or _cpus()

    def _run(self) -> None:
        try:
            for source in self.sources:
                try:
                    from aiforge.bundle.runtime import Runtime

                    rt = Runtime.load(source, precision=self.precision, home=self.home, threads=self.threads)
                    rt.warmup()
                    self._results[source] = rt
                except Exception as exc:  # handed to the app, which reports it per source
                    self._results[source] = exc
        finally:
            self._done.set()

    def settings(self) -> tuple[str, int, str | None]:
        """What this preload loaded with: precision, onnxruntime threads, registry home."""
        return self.precision, self.threads, str(self.home) if self.home else None

    def matches(self, *, precision: str, threads: int | None, home: str | Path | None) -> bool:
        """Whether this preload loaded with the settings a server was configured with."""
        return (precision, threads or _cpus(), str(home) if home else None) == self.settings()

    def check(self, *, precision: str, threads: int | None, home: str | Path | None) -> None:
        """Raise unless this preload loaded with these server settings (its work would be thrown away).

        Raises:
            AiforgeError: the settings differ; the message names both.
        """
        if not self.matches(precision=precision, threads=threads, home=home):
            wanted = (precision, threads or _cpus(), str(home) if home else None)
            raise AiforgeError(f"the preload loaded with (precision, threads, home) = {self.settings()}, the "
                               f"server is configured with {wanted}: start the Preload with the server's "
                               "settings (aiforge serve does), or pass none.")

    def take(self, source: str | Path) -> Runtime | None:
        """The Runtime loaded for ``source`` (None if it was not preloaded).

        Raises:
            Exception: whatever loading ``source`` raised.
        """
        if str(source) not in self.sources:
            return None
        self._done.wait()
        result = self._results[str(source)]
        if isinstance(result, BaseException):
            raise result
        return result

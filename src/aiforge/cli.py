"""The ``aiforge`` console entry point (``aiforge …``, ``python -m aiforge.cli …``).

A plain ``aiforge serve BUNDLE…`` is read here and served without typer (:mod:`aiforge.serve.launch`):
importing typer, rich and every kind's commands was a fifth of the server's cold start. Every other
command line, and every ``serve`` the quick reading leaves to typer, runs the typer app of
:mod:`aiforge.commands` (also importable as ``aiforge.cli.app``), so help, errors and options are typer's.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from aiforge.errors import AiforgeError

__all__ = ["main"]  # and ``app``, the typer app, on first use (module __getattr__)


def main() -> None:
    """Entry point: run the CLI; print AiforgeError as one line (traceback with --debug)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from aiforge.serve.launch import read_plain_serve, serve_bundles

    plain = read_plain_serve(sys.argv[1:])
    debug = False
    try:
        if plain is not None:
            serve_bundles(plain.bundles, settings=plain.settings, home=plain.home)
            return
        from aiforge.commands import app as typer_app
        from aiforge.commands import debugging

        try:
            typer_app()  # standalone: click prints usage errors itself and exits 2
        finally:
            debug = debugging()
    except AiforgeError as exc:
        if debug:
            raise
        from rich.console import Console

        Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise SystemExit(1) from None


def __getattr__(name: str) -> Any:
    """``app``: the typer app, imported on first use (the plain ``serve`` path never needs it)."""
    if name == "app":
        from aiforge.commands import app as typer_app

        return typer_app
    raise AttributeError(f"module 'aiforge.cli' has no attribute {name!r}")


if __name__ == "__main__":
    main()

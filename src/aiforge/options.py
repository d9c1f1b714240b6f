"""Options and the console shared by the CLI and each kind's ``commands.py``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

__all__ = ["HomeOpt", "out"]

out = Console()
HomeOpt = Annotated[Path | None, typer.Option("--home", help="Registry folder (default $AIFORGE_HOME or ~/.aiforge).")]

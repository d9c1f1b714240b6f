"""``aiforge recommend`` and ``aiforge similar``: query a recommendation bundle from the shell."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from aiforge.bundle.runtime import Runtime
from aiforge.errors import AiforgeError, InputError
from aiforge.options import HomeOpt
from aiforge.tasks.recommend.runtime import RecommendRuntime

__all__ = ["register"]




def recommend(
    bundle: Annotated[str, typer.Argument(help="Bundle folder, NAME or NAME:VERSION.")],
    user: Annotated[str | None, typer.Option("--user", "-u", help="User id (unknown: cold start).")] = None,
    item: Annotated[list[str] | None, typer.Option("--item", "-i", help="An item a new user liked (repeat).")] = None,
    k: Annotated[int, typer.Option("-k", help="How many items.")] = 10,
    include_seen: Annotated[bool, typer.Option(help="Also return items the user already liked.")] = False,
    filter_json: Annotated[str | None, typer.Option("--filter", help='Filter as JSON: {"genres": "Comedy"}.')] = None,
    home: HomeOpt = None,
) -> None:
    """Recommend items for a user or for a new user's liked items; JSON on stdout."""

    rt = Runtime.load(bundle, home=home)
    if not isinstance(rt, RecommendRuntime):
        raise AiforgeError(f"{bundle} is a {rt.manifest.task} bundle; recommend needs a recommendation bundle.")
    try:
        flt = json.loads(filter_json) if filter_json else None
    except json.JSONDecodeError as exc:
        raise InputError(f"--filter: not valid JSON ({exc}).") from exc
    out = rt.recommend(user, items=item or None, k=k, exclude_seen=not include_seen, filter=flt)
    sys.stdout.write(json.dumps(out, indent=2) + "\n")


def similar(
    bundle: Annotated[str, typer.Argument(help="Bundle folder, NAME or NAME:VERSION.")],
    item: Annotated[str, typer.Argument(help="Item id.")],
    k: Annotated[int, typer.Option("-k", help="How many items.")] = 10,
    home: HomeOpt = None,
) -> None:
    """Items most liked together with ITEM (or closest in content); JSON on stdout."""

    rt = Runtime.load(bundle, home=home)
    if not isinstance(rt, RecommendRuntime):
        raise AiforgeError(f"{bundle} is a {rt.manifest.task} bundle; similar needs a recommendation bundle.")
    sys.stdout.write(json.dumps(rt.similar(item, k=k), indent=2) + "\n")


def register(app: typer.Typer) -> None:
    """Add ``recommend`` and ``similar`` to the CLI."""
    app.command()(recommend)
    app.command()(similar)

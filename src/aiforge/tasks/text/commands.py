"""``aiforge demo``: the text kind's own command (a small intent app trained on data aiforge writes)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from aiforge.errors import AiforgeError
from aiforge.options import HomeOpt, out

__all__ = ["register"]


def demo(
    home: HomeOpt = None,
    workdir: Annotated[Path | None, typer.Option(help="Where to write the demo data (default: a temp folder).")] = None,
) -> None:
    """Train a small intent classifier on data aiforge writes itself, then predict with it."""
    # lazy: torch stays out of the CLI's start-up, and the training API out of `aiforge serve`'s
    from aiforge.app import App, load
    from aiforge.tables import metrics_table
    from aiforge.tasks.text.fitted import TextFitResult
    from aiforge.tasks.text.samples import write_demo_intents
    from aiforge.tasks.text.spec import TextSpec

    folder = workdir or Path(tempfile.mkdtemp(prefix="aiforge-demo-"))
    train_csv, test_csv = write_demo_intents(folder)
    out.print(f"[bold]1.[/] wrote demo data: {train_csv} and {test_csv}")
    spec = TextSpec.from_dict({
        "name": "demo-intents", "task": "text-classification",
        "data": {"train": str(train_csv), "test": str(test_csv), "text_column": "text", "label_column": "intent"},
        "model": {"backbone": "minilm-l6", "mode": "head"},
    }, source="demo")
    application = App(spec, home=home)
    out.print("[bold]2.[/] fitting a head on the pre-trained MiniLM encoder (frozen)")
    result = application.fit()
    if not isinstance(result, TextFitResult):  # App.fit's result is typed per kind only at run time
        raise AiforgeError(f"the demo's text spec fitted to a {type(result).__name__}, not a TextFitResult.")
    out.print(metrics_table("demo-intents", {"validation": result.validation.to_dict(),
                                              "test": result.test.to_dict() if result.test else None}))
    out.print("[bold]3.[/] exporting to ONNX (fp32 + int8), checking parity, registering")
    exported = application.export()
    out.print(f"    registered demo-intents:{exported.record.version} at {exported.path}")
    out.print("[bold]4.[/] predicting with the torch-free Runtime")

    rt = load("demo-intents", home=home)
    examples = ["my visa got stolen yesterday", "how much cash do I have", "is the bank open on saturday",
                "please end my membership", "hey, good afternoon", "pay my landlord 700 euros"]
    table = Table(title=f"predictions ({rt.precision} graph)")
    table.add_column("text")
    table.add_column("label")
    table.add_column("score", justify="right")
    for text, p in zip(examples, rt.predict(examples), strict=True):
        table.add_row(text, p.label, f"{p.score:.3f}")
    out.print(table)
    out.print("Try: aiforge predict demo-intents \"I lost my card\""
              + (f" --home {home}" if home else ""))


def register(app: typer.Typer) -> None:
    """Add ``demo`` to the aiforge CLI."""
    app.command("demo")(demo)

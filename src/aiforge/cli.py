"""The ``aiforge`` command line: each command parses arguments and calls one API function."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from aiforge.errors import AiforgeError
from aiforge.options import HomeOpt, out
from aiforge.tables import metrics_table, per_class_table
from aiforge.tasks.registry import KINDS, resolve

__all__ = ["app", "main"]

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="aiforge: pre-trained models to fast, fair, deployed AI applications.")
registry_app = typer.Typer(no_args_is_help=True, help="Registered bundles: list and show.")
app.add_typer(registry_app, name="registry")
_state = {"debug": False}



@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False) -> None:
    _state["debug"] = debug


def _columns(**roles: str | None) -> dict[str, str]:
    """Column options given on the command line, by role (unset ones left to the bundle)."""
    return {role: col for role, col in roles.items() if col}


@app.command()
def train(
    spec_file: Annotated[Path, typer.Argument(help="Path of aiforge.yaml.")],
    home: HomeOpt = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Fit, evaluate (and audit), export to ONNX, check parity, register, and print a summary."""
    from aiforge.app import App

    application = App.from_yaml(spec_file, home=home)
    result = application.fit(progress=progress)
    exported = application.export()
    for renderable in application.task.summarize(result, exported):
        out.print(renderable)
    out.print(f"registered [bold]{exported.record.name}:{exported.record.version}[/] at {exported.path}")


@app.command("eval")
def eval_(
    bundle: Annotated[str, typer.Argument(help="Bundle folder, NAME or NAME:VERSION.")],
    data: Annotated[Path, typer.Option("--data", help="Labelled CSV, JSONL or Parquet file.")],
    text_column: Annotated[str | None, typer.Option(help="Text column (default: as trained).")] = None,
    label_column: Annotated[str | None, typer.Option(help="Label column (default: as trained).")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write metrics JSON here.")] = None,
    home: HomeOpt = None,
) -> None:
    """Score a bundle on a labelled file; print a table, optionally write JSON."""
    from aiforge.app import evaluate

    metrics = evaluate(bundle, data, columns=_columns(text=text_column, label=label_column), home=home).to_dict()
    out.print(metrics_table(f"{bundle} on {data}", {"data": metrics}))
    out.print(per_class_table(metrics))
    if output:
        output.write_text(json.dumps(metrics, indent=2), encoding="utf-8")
        out.print(f"wrote {output}")


@app.command()
def predict(
    bundle: Annotated[str, typer.Argument(help="Bundle folder, NAME or NAME:VERSION.")],
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to classify.")] = None,
    input_file: Annotated[Path | None, typer.Option("--input", "-i", help="CSV/JSONL/Parquet/TXT of texts.")] = None,
    text_column: Annotated[str | None, typer.Option(help="Text column of --input (default: as trained).")] = None,
    top: Annotated[int, typer.Option(help="Probabilities to keep per text in the output.", min=1)] = 5,
    home: HomeOpt = None,
) -> None:
    """Classify texts; one JSON line per text on stdout."""
    from aiforge.app import load, predict_file

    if bool(texts) == bool(input_file):
        raise AiforgeError("give texts as arguments or --input FILE, not both and not neither.")
    rt = load(bundle, home=home)
    if input_file:
        rows = predict_file(rt, input_file, columns=_columns(text=text_column))
    else:
        rows = [{"text": t, **p.to_dict()} for t, p in zip(texts or [], rt.predict(list(texts or [])), strict=True)]
    for row in rows:
        row["scores"] = dict(sorted(row["scores"].items(), key=lambda kv: -kv[1])[:top])
        sys.stdout.write(json.dumps(row) + "\n")


@registry_app.command("list")
def registry_list(home: HomeOpt = None) -> None:
    """Every registered bundle version with its headline metrics."""
    from aiforge.bundle.registry import Registry

    reg = Registry(home)
    table = Table(title=f"registry at {reg.home}")
    for col in ("name", "version", "task", "stage", "created", "headline metrics"):
        table.add_column(col)
    for r in reg.records():
        table.add_row(r.name, str(r.version), r.task, r.stage, r.created, _headline(r.metrics))
    out.print(table)


def _headline(metrics: dict[str, Any], limit: int = 3) -> str:
    """The first few numeric metrics of a record, whatever its task reports (accuracy, NDCG@10…)."""
    shown = [f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)]
    return ", ".join(shown[:limit]) or "-"


@registry_app.command("show")
def registry_show(
    name: Annotated[str, typer.Argument(help="NAME or NAME:VERSION.")],
    home: HomeOpt = None,
) -> None:
    """The manifest of one bundle version (checksums verified), as JSON."""
    from aiforge.bundle.registry import Registry

    reg = Registry(home)
    base, _, version = name.partition(":")
    manifest = reg.manifest(base, version or None)
    sys.stdout.write(json.dumps(manifest.to_dict(), indent=2) + "\n")


@app.command()
def serve(
    bundles: Annotated[list[str], typer.Argument(help="Bundle folders, NAME or NAME:VERSION (one or more).")],
    host: Annotated[str | None, typer.Option(help="Address to bind [default: 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port [default: 8000].")] = None,
    max_batch_size: Annotated[int | None, typer.Option(help="Items per model batch [default: spec or 64].")] = None,
    max_wait_ms: Annotated[float | None, typer.Option(help="Longest wait for a batch [default: spec or 5].")] = None,
    max_queue_items: Annotated[int | None, typer.Option(help="Queued items before 503 [default: 2048].")] = None,
    batch_concurrency: Annotated[int | None, typer.Option(help="Batches in flight per model [default: 1].")] = None,
    threads: Annotated[int | None, typer.Option(help="onnxruntime threads per batch [default: cores].")] = None,
    timeout: Annotated[float | None, typer.Option(help="Per-request timeout in s, 504 after [default: 30].")] = None,
    max_inputs: Annotated[int | None, typer.Option(help="Texts per request, 422 above [default: 256].")] = None,
    max_text_chars: Annotated[int | None, typer.Option(help="Characters per text, 422 above [default: 10000].")] = None,
    max_body_bytes: Annotated[int | None, typer.Option(help="Body size, 413 above [default: 1 MiB].")] = None,
    precision: Annotated[str | None, typer.Option(help="auto, fp32, int8 or int8-only (image bundles: "
                                                           "int8 without the fp32 re-check) [default: auto].")] = None,
    api_key_file: Annotated[Path | None, typer.Option(help="File of API keys, one per line.")] = None,
    access_log: Annotated[bool, typer.Option(help="JSON access log on stderr.")] = True,
    home: HomeOpt = None,
) -> None:
    """Serve bundles over HTTP: Open Inference Protocol v2, simple JSON, /metrics, /docs.

    Unset batching options come from the first bundle's spec (its serve block).
    """
    from aiforge.serve.app import serve as run_server
    from aiforge.serve.config import server_config

    config = server_config(bundles, home=home, host=host, port=port, max_batch_size=max_batch_size,
                           max_wait_ms=max_wait_ms, max_queue_items=max_queue_items, request_timeout_s=timeout,
                           batch_concurrency=batch_concurrency, threads=threads,
                           max_inputs=max_inputs, max_text_chars=max_text_chars, max_body_bytes=max_body_bytes,
                           precision=precision, api_key_file=api_key_file, access_log=access_log)
    run_server(bundles, config=config, home=home)


@app.command()
def bench(
    bundle: Annotated[str, typer.Argument(help="Bundle folder, NAME or NAME:VERSION.")],
    concurrency: Annotated[str, typer.Option(help="Comma-separated client counts.")] = "1,8,64",
    duration: Annotated[float, typer.Option(help="Seconds per level.", min=1, max=600)] = 20.0,
    input_file: Annotated[Path | None, typer.Option("--input", "-i", help="Texts to send (CSV/JSONL/TXT).")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write results JSON here.")] = None,
    max_batch_size: Annotated[int, typer.Option(help="Server batch size.")] = 64,
    max_wait_ms: Annotated[float, typer.Option(help="Server batch wait.")] = 5.0,
    precision: Annotated[str, typer.Option(help="auto, fp32, int8 or int8-only.")] = "auto",
    home: HomeOpt = None,
) -> None:
    """Start a server on loopback, load it at each concurrency, report throughput and latency."""
    from aiforge.serve.benchmark import benchmark_bundle

    texts = None
    if input_file:
        from aiforge.app import predict_file

        texts = [row["text"] for row in predict_file(bundle, input_file, home=home)]
    levels = [int(c) for c in concurrency.split(",") if c.strip()]
    report = benchmark_bundle(bundle, levels=levels, duration=duration, texts=texts, home=home,
                              max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, precision=precision)
    table = Table(title=f"{bundle}: {duration:g} s per level, server ready in {report['ready_seconds']:.2f} s")
    for col in ("concurrency", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors"):
        table.add_column(col, justify="right")
    for r in report["levels"]:
        table.add_row(str(r["concurrency"]), f"{r['throughput_rps']:.1f}", f"{r['p50_ms']:.1f}",
                      f"{r['p95_ms']:.1f}", f"{r['p99_ms']:.1f}", str(r["errors"]))
    out.print(table)
    if output:
        output.write_text(json.dumps(report, indent=2), encoding="utf-8")
        out.print(f"wrote {output}")


# Commands of each kind (its row's ``commands``: a ``register(app)`` function). Imported at start-up,
# so a kind's commands module imports its heavy dependencies inside the commands.
for _kind in KINDS:
    if _kind.commands:
        resolve(_kind.commands)(app)


def main() -> None:
    """Entry point: run the CLI; print AiforgeError as one line (traceback with --debug)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app()  # standalone: click prints usage errors itself and exits 2
    except AiforgeError as exc:
        if _state["debug"]:
            raise
        Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()

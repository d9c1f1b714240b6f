"""The ``aiforge`` commands (typer): each parses arguments and calls one API function.

The console entry point is :func:`aiforge.cli.main`: it answers a plain ``aiforge serve`` without
importing this module (the server's cold start, see :mod:`aiforge.serve.launch`) and hands every other
command line to :data:`app`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from aiforge.bundle.registry import Registry
from aiforge.bundle.registry import verify as verify_bundle
from aiforge.errors import AiforgeError
from aiforge.options import HomeOpt, out
from aiforge.scale.commands import BackendOpt, RayAddressOpt
from aiforge.scale.commands import register as register_scale_commands
from aiforge.tasks.registry import KINDS, resolve

if TYPE_CHECKING:
    from aiforge.audit.report import CheckReport

__all__ = ["app", "debugging"]

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="aiforge: pre-trained models to fast, fair, deployed AI applications.")
registry_app = typer.Typer(no_args_is_help=True, help="Registered bundles: list and show.")
app.add_typer(registry_app, name="registry")
_state = {"debug": False}


def debugging() -> bool:
    """Whether ``--debug`` was given (errors then show their traceback)."""
    return _state["debug"]


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False) -> None:
    _state["debug"] = debug


def _columns(pairs: list[str] | None = None, **roles: str | None) -> dict[str, str]:
    """Column options given on the command line (``--column ROLE=NAME`` and the named ones), by role."""
    out = {role: col for role, col in roles.items() if col}
    for pair in pairs or []:
        role, sep, col = pair.partition("=")
        if not sep or not role or not col:
            raise AiforgeError(f"--column {pair!r}: expected ROLE=NAME, e.g. --column label=intent.")
        out[role.strip()] = col.strip()
    return out


def _gate_values(pairs: list[str]) -> dict[str, Any]:
    """``--gate KEY=VALUE`` pairs: numbers, true/false, comma-separated names (sensitive_features), decide=RULE."""
    gates: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise AiforgeError(f"--gate {pair!r}: expected KEY=VALUE, e.g. --gate min_accuracy=0.9.")
        value: Any
        if raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        else:
            try:
                value = float(raw)
            except ValueError:
                value = [v.strip() for v in raw.split(",") if v.strip()]
        if key.strip() == "decide":  # the one text setting: upper_bound | point
            value = raw.strip()
        gates[key.strip()] = value
    return gates


def _show(report: CheckReport) -> None:
    """Print a kind's report: its tables, then its lines (the CLI knows no kind)."""
    for t in report.tables:
        table = Table(title=t.title)
        for i, col in enumerate(t.columns):
            table.add_column(col, justify="left" if i == 0 or not col else "right")
        for row in t.rows:
            table.add_row(*row)
        out.print(table)
    for line in report.lines:
        out.print(line, highlight=False)


@app.command()
def train(
    spec_file: Annotated[Path, typer.Argument(help="Path of aiforge.yaml.")],
    home: HomeOpt = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Fit, evaluate (and audit), export to ONNX, check parity, register, and print a summary."""
    # lazy: the training API and the audit stay out of `aiforge serve`'s start-up (cold start)
    from aiforge.app import App

    application = App.from_yaml(spec_file, home=home)
    result = application.fit(progress=progress)
    exported = application.export()
    for renderable in application.task.summarize(result, exported):
        out.print(renderable)
    out.print(f"registered [bold]{exported.record.name}:{exported.record.version}[/] at {exported.path}")


_DATA_HELP = ("Labelled data: a CSV/JSONL/Parquet of texts and labels (text), of records and the label (tabular), "
              "of utterances and intents (chat); a folder per class or a (path, label) CSV (image); held-out "
              "interactions (recommendation); a drive plan YAML or a driving aiforge.yaml (driving: closed-loop "
              "episodes).")


@app.command("eval")
def eval_(
    bundle: Annotated[str, typer.Argument(help="Bundle folder, NAME or NAME:VERSION (any kind).")],
    data: Annotated[Path, typer.Option("--data", help=_DATA_HELP)],
    text_column: Annotated[str | None, typer.Option(help="Text column (default: as trained).")] = None,
    label_column: Annotated[str | None, typer.Option(help="Label column (default: as trained).")] = None,
    column: Annotated[list[str] | None, typer.Option("--column", help="ROLE=NAME for any other column "
                                                     "(path, user, item, rating).")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write metrics JSON here.")] = None,
    home: HomeOpt = None,
) -> None:
    """Score a bundle on a labelled file with its kind's own metrics; print tables, optionally write JSON."""
    # lazy: the training API and the audit stay out of `aiforge serve`'s start-up (cold start)
    from aiforge.audit.checks import evaluate_bundle

    report = evaluate_bundle(bundle, data, columns=_columns(column, text=text_column, label=label_column), home=home)
    _show(report)
    if output:
        report.write_json(output)
        out.print(f"wrote {output}")


@app.command()
def audit(
    bundle: Annotated[str, typer.Argument(help="Bundle folder, NAME or NAME:VERSION (any kind).")],
    data: Annotated[Path, typer.Option("--data", help=_DATA_HELP + " Holds the --sensitive columns.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Folder for audit.json (and report.html "
                                                                      "for tabular) [default: ./audit-NAME].")] = None,
    sensitive: Annotated[list[str] | None, typer.Option("--sensitive", help="Column of the data to audit groups "
                                                        "by [tabular default: as trained].")] = None,
    home: HomeOpt = None,
) -> None:
    """Audit a bundle on a labelled file: per-class or per-segment report; per-group with --sensitive COL."""
    # lazy: the training API and the audit stay out of `aiforge serve`'s start-up (cold start)
    from aiforge.audit.checks import audit_bundle

    report = audit_bundle(bundle, data, sensitive=sensitive, output=output, home=home)
    out.print(report.title, highlight=False)
    _show(report)
    out.print(f"wrote {' and '.join(str(f) for f in report.files)}")


@app.command()
def ship(
    target: Annotated[str, typer.Argument(help="aiforge.yaml (train, export, then check) or a bundle (any kind).")],
    data: Annotated[Path | None, typer.Option("--data", help="Labelled file to check on [default: the spec's "
                                                             "held-out test split].")] = None,
    gate: Annotated[list[str] | None, typer.Option("--gate", help="KEY=VALUE: check this gate instead of the "
                                                   "spec's gates (repeat), e.g. --gate max_size_mb=50.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the verdict as JSON here.")] = None,
    home: HomeOpt = None,
) -> None:
    """Check the release gates on the exported bundle; mark it production only if all pass (exit 1 otherwise)."""
    # lazy: the training API and the audit stay out of `aiforge serve`'s start-up (cold start)
    from aiforge.audit.ship import ship as run_ship

    report = run_ship(target, data=data, home=home, gates=_gate_values(gate) if gate else None)
    table = Table(title=f"release gates for {report.name}:{report.version} ({report.task}), decided by "
                        f"{report.decide}{', undecided allowed' if report.allow_undecided else ''}")
    per_feature = any(r.feature for r in report.results)
    for col in ("gate", "feature", "limit", "measured", "95% CI", "result") if per_feature else (
            "gate", "limit", "measured", "95% CI", "result"):
        table.add_column(col, justify="left" if col in ("gate", "feature", "result") else "right")
    for r in report.results:
        measured = "n/a" if r.measured is None else f"{r.measured:.4f}"
        ci = f"{r.interval[0]:.4f}-{r.interval[1]:.4f}" if r.interval else ""
        verdict = ("[green]pass[/]" if r.decision == "pass" else f"[yellow]UNDECIDED[/] {r.note}".strip()
                   if r.decision == "undecided" else f"[red]FAIL[/] {r.note}".strip())
        table.add_row(*([r.key, r.feature or ""] if per_feature else [r.key]), str(r.limit), measured, ci, verdict)
    out.print(table)
    if report.source:
        out.print(f"measured on {report.source}", highlight=False)
    groups = report.rows_per_group()
    if groups:
        out.print("rows per group: " + "; ".join(f"{f}: " + ", ".join(f"{g} {n}" for g, n in gs.items())
                                               for f, gs in groups.items()), highlight=False)
    if output:
        output.write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
    if report.passed:
        out.print(f"all gates pass: {report.name}:{report.version} is now [bold]production[/]")
        return
    failed = sum(not r.passed for r in report.results)
    undecided = sum(not r.passed and r.decision == "undecided" for r in report.results)
    why = f" ({undecided} undecided: set gates.allow_undecided: true to ship anyway)" if undecided else ""
    Console(stderr=True).print(f"[bold red]not shipped:[/] {failed} gate(s) failed{why}; "
                               f"{report.name}:{report.version} stays at stage {report.stage!r}", highlight=False)
    raise typer.Exit(1)


@app.command()
def predict(
    bundle: Annotated[str, typer.Argument(help="Bundle folder, NAME or NAME:VERSION.")],
    texts: Annotated[list[str] | None, typer.Argument(help="Items to predict: texts (text bundles, chat intents) "
                                                      "or image files (image bundles).")] = None,
    input_file: Annotated[Path | None, typer.Option("--input", "-i", help="File of items: CSV/JSONL/Parquet/TXT of "
                                                    "texts; CSV/Parquet of records (tabular); a folder, CSV or "
                                                    "TXT of image paths (image).")] = None,
    text_column: Annotated[str | None, typer.Option(help="Text column of --input (default: as trained).")] = None,
    top: Annotated[int, typer.Option(help="Probabilities to keep per item in the output.", min=1)] = 5,
    home: HomeOpt = None,
) -> None:
    """Predict with a classifier bundle (text, image, tabular records, chat intents); one JSON line per item.

    Recommendation bundles answer ``aiforge recommend`` and ``aiforge similar``; chat bundles ``aiforge chat``.
    """
    # lazy: the training API and the audit stay out of `aiforge serve`'s start-up (cold start)
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

    reg = Registry(home)
    base, _, version = name.partition(":")
    manifest = reg.manifest(base, version or None)
    sys.stdout.write(json.dumps(manifest.to_dict(), indent=2) + "\n")


@app.command()
def verify(
    bundle: Annotated[str, typer.Argument(help="Bundle folder, NAME or NAME:VERSION (any kind).")],
    home: HomeOpt = None,
) -> None:
    """Check a bundle as loading does: its manifest's digest (and signature, with AIFORGE_SIGNING_KEY set),
    every file's sha256, no unlisted file, every file pipeline.json names. Exits 1 naming what is wrong."""

    out.print(verify_bundle(bundle, home=home).summary(), highlight=False, soft_wrap=True)


@app.command()
def export(
    bundle: Annotated[str, typer.Argument(help="Bundle folder, NAME or NAME:VERSION (text or image classifier).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write (must not exist or be empty); "
                                                              "a .zip of it is written beside it.")],
    edge: Annotated[bool, typer.Option("--edge", help="A self-contained folder: the bundle, run.py (CLI and "
                                                      "--serve) and a pinned requirements.txt.")] = False,
    home: HomeOpt = None,
) -> None:
    """Package a bundle to run elsewhere; --edge: needs only onnxruntime, numpy and tokenizers (Pillow for images)."""
    if not edge:
        raise AiforgeError("aiforge export writes edge packages: add --edge (bundles themselves are exported by "
                           "`aiforge train`).")
    from aiforge.bundle.edge import build_edge  # lazy: the edge packer stays out of `aiforge serve`'s start-up

    package = build_edge(bundle, out=output, home=home)
    out.print(f"wrote {package.folder} ({package.folder_bytes / 1e6:.1f} MB) and {package.zip} "
              f"({package.zip_bytes / 1e6:.1f} MB); run: python {package.folder / 'run.py'} --help", highlight=False,
              soft_wrap=True)


@app.command()
def serve(
    bundles: Annotated[list[str], typer.Argument(help="Bundle folders, NAME or NAME:VERSION (one or more).")],
    host: Annotated[str | None, typer.Option(help="Address to bind [default: $AIFORGE_HOST, else 127.0.0.1; "
                                                   "never the bundle's].")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port [default: 8000].")] = None,
    max_batch_size: Annotated[int | None, typer.Option(help="Items per model batch [default: spec or 64].")] = None,
    max_wait_ms: Annotated[float | None, typer.Option(help="Longest wait for a batch [default: spec or 5].")] = None,
    max_queue_items: Annotated[int | None, typer.Option(help="Queued items before 503 [default: 2048].")] = None,
    batch_concurrency: Annotated[int | None, typer.Option(help="Batches in flight per model [default: 1].")] = None,
    threads: Annotated[int | None, typer.Option(help="onnxruntime threads per batch [default: cores].")] = None,
    timeout: Annotated[float | None, typer.Option(help="Per-request timeout in s, 504 after [default: 30].")] = None,
    max_inputs: Annotated[int | None, typer.Option(help="Items per request, 422 above [default: 256].")] = None,
    max_text_chars: Annotated[int | None, typer.Option(help="Characters per text, 422 above [default: 10000].")] = None,
    max_body_bytes: Annotated[int | None, typer.Option(help="Body size, 413 above [default: 1 MiB].")] = None,
    precision: Annotated[str | None, typer.Option(help="auto, fp32, int8 or int8-only (image bundles: "
                                                           "int8 without the fp32 re-check) [default: auto].")] = None,
    api_key_file: Annotated[Path | None, typer.Option(help="File of API keys, one per line.")] = None,
    access_log: Annotated[bool, typer.Option(help="JSON access log on stderr.")] = True,
    public_docs_metrics: Annotated[bool, typer.Option(help="With --api-key-file, still serve /metrics, /docs and "
                                                           "/openapi.json without a key.")] = False,
    rate_limit: Annotated[float | None, typer.Option(help="Requests per second per client (API key, or address "
                                                          "without keys); 429 above [default: no limit].")] = None,
    rate_burst: Annotated[int | None, typer.Option(help="Requests a client may send at once before --rate-limit "
                                                        "applies [default: the rate, at least 1].")] = None,
    header_timeout: Annotated[float | None, typer.Option(help="Seconds for a request's headers, 408 after "
                                                              "[default: 10].")] = None,
    body_timeout: Annotated[float | None, typer.Option(help="Seconds for a request's body, 408 after "
                                                            "[default: 10].")] = None,
    max_connections: Annotated[int | None, typer.Option(help="Open connections, 503 above [default: 1024].")] = None,
    backend: BackendOpt = "local",
    replicas: Annotated[int | None, typer.Option(help="--backend ray: replicas per bundle [default: 1].")] = None,
    autoscale: Annotated[str | None, typer.Option(help="--backend ray: MIN:MAX replicas, autoscaled on ongoing "
                                                       "requests per replica.")] = None,
    replica_cpus: Annotated[float | None, typer.Option(help="--backend ray: CPUs per replica (also its onnxruntime "
                                                           "threads) [default: 1].")] = None,
    ray_ingress: Annotated[str | None, typer.Option(help="--backend ray, local cluster: haproxy (Ray's "
                                                       "high-throughput mode: HAProxy straight to the replicas) or "
                                                       "proxy (Ray's Python HTTP proxy) [default: haproxy].")] = None,
    ray_address: RayAddressOpt = None,
    home: HomeOpt = None,
) -> None:
    """Serve bundles over HTTP: Open Inference Protocol v2, simple JSON, /metrics, /docs.

    Unset batching options come from the first bundle's spec (its serve block). ``--backend ray`` serves
    the same routes from Ray Serve replicas (answers carry ``x-aiforge-replica``).
    """
    # lazy: the Ray backend's options and the serving stack stay out of every other command's start-up
    from aiforge.scale.options import parse_autoscale, scale_options
    from aiforge.serve.launch import serve_bundles

    settings = {"host": host, "port": port, "max_batch_size": max_batch_size, "max_wait_ms": max_wait_ms,
                "max_queue_items": max_queue_items, "request_timeout_s": timeout,
                "batch_concurrency": batch_concurrency, "threads": threads, "max_inputs": max_inputs,
                "max_text_chars": max_text_chars, "max_body_bytes": max_body_bytes, "precision": precision,
                "api_key_file": api_key_file, "access_log": access_log, "public_docs_metrics": public_docs_metrics,
                "rate_limit": rate_limit, "rate_burst": rate_burst, "header_timeout_s": header_timeout,
                "body_timeout_s": body_timeout, "max_connections": max_connections}
    scale = scale_options(replicas=replicas, autoscale=parse_autoscale(autoscale), ray_address=ray_address,
                          cpus_per_replica=replica_cpus, ray_ingress=ray_ingress)
    serve_bundles(bundles, settings=settings, home=home, backend=backend, scale=scale)


@app.command()
def bench(
    bundle: Annotated[str, typer.Argument(help="Bundle folder, NAME or NAME:VERSION.")],
    concurrency: Annotated[str, typer.Option(help="Comma-separated client counts.")] = "1,8,64",
    duration: Annotated[float, typer.Option(help="Seconds per level.", min=1, max=600)] = 20.0,
    input_file: Annotated[Path | None, typer.Option("--input", "-i", help="Texts to send, for bundles that take "
                                                    "texts (CSV/JSONL/TXT) [default: ten banking "
                                                    "questions].")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write results JSON here.")] = None,
    max_batch_size: Annotated[int, typer.Option(help="Server batch size.")] = 64,
    max_wait_ms: Annotated[float, typer.Option(help="Server batch wait.")] = 5.0,
    precision: Annotated[str, typer.Option(help="auto, fp32, int8 or int8-only.")] = "auto",
    home: HomeOpt = None,
) -> None:
    """Start a server on loopback, load it at each concurrency, report throughput and latency.

    It sends texts to the v2 infer route, so it measures bundles that take texts (text
    classification, chat intents).
    """
    # lazy: the serving stack (fastapi) stays out of every other command's start-up
    from aiforge.serve.benchmark import benchmark_bundle

    texts = None
    if input_file:
        # lazy: the training API and the audit stay out of `aiforge serve`'s start-up (cold start)
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


register_scale_commands(app)  # batch, deploy


# --- aiforge optimize (engine: aiforge/optimize/command.py) ---
def _seconds(text: str) -> float:
    """``120``, ``120s``, ``2m`` -> seconds."""
    value = text.strip().lower()
    scale = 60.0 if value.endswith("m") else 1.0
    try:
        seconds = float(value.rstrip("sm")) * scale
    except ValueError:
        raise AiforgeError(f"--budget: expected seconds like 120s or 2m, got {text!r}.") from None
    if seconds <= 0:
        raise AiforgeError(f"--budget: expected a positive time, got {text!r}.")
    return seconds


@app.command()
def optimize(
    bundle: Annotated[str, typer.Argument(help="Bundle NAME, NAME:VERSION or folder (text or image classifier).")],
    budget: Annotated[str, typer.Option("--budget", help="Time bound of the sweep (120s, 2m); it stops early "
                                                         "and keeps what it measured.")] = "120s",
    version: Annotated[str | None, typer.Option("--version", help="Version to start from (default: latest).")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="Parity data file/folder instead of the one the "
                                                             "bundle's spec names.")] = None,
    min_agreement: Annotated[float | None, typer.Option("--min-agreement", help="Raise the agreement gate above "
                                                                                "the bundle's own.")] = None,
    register: Annotated[bool, typer.Option("--register/--no-register", help="Register the chosen settings as a "
                                                                            "new version.")] = True,
    levels: Annotated[str, typer.Option("--levels", help="Graph optimization levels (basic, extended, all).")] =
    "basic,all",
    threads: Annotated[str, typer.Option("--threads", help="Intra-op thread counts.")] = "1,2",
    batch_sizes: Annotated[str, typer.Option("--batch-sizes", help="max_batch_size values.")] = "16,64",
    waits: Annotated[str, typer.Option("--waits", help="max_wait_ms values.")] = "2,5",
    timing_items: Annotated[int, typer.Option("--timing-items", min=8, help="Items each throughput and latency "
                                                                           "measurement sends.")] = 192,
    home: HomeOpt = None,
) -> None:
    """Sweep precision recipe x graph optimization level x threads x max_batch_size x max_wait_ms on the
    bundle's parity data; print and write the Pareto table; register the best row that passes the gate."""
    from aiforge.optimize.command import optimize_bundle  # lazy: the sweep imports onnx and the batcher
    from aiforge.optimize.pareto import render  # lazy: as above
    from aiforge.optimize.sweep import SweepGrid  # lazy: as above

    def numbers(option: str, text: str) -> list[float]:
        try:
            values = [float(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise AiforgeError(f"{option}: expected comma-separated numbers, got {text!r}.") from None
        if not values or min(values) < 0:
            raise AiforgeError(f"{option}: expected at least one number >= 0, got {text!r}.")
        return values

    names = [v.strip() for v in levels.split(",") if v.strip()]
    if not names or set(names) - {"basic", "extended", "all"}:
        raise AiforgeError(f"--levels: expected some of basic, extended, all, got {levels!r}.")
    grid = SweepGrid(levels=tuple(names), threads=tuple(max(1, int(v)) for v in numbers("--threads", threads)),
                     batch_sizes=tuple(max(1, int(v)) for v in numbers("--batch-sizes", batch_sizes)),
                     waits_ms=tuple(numbers("--waits", waits)), timing_items=timing_items)
    result = optimize_bundle(bundle, version=version, budget_s=_seconds(budget), home=home, data=data,
                             min_agreement=min_agreement, grid=grid, register=register, progress=sys.stderr.isatty())
    wide = out if out.is_terminal else Console(width=170)  # a pipe or file gets every column
    wide.print(render(result.rows, concurrencies=grid.concurrencies,
                     title=f"{result.name}: {len(result.rows)} settings in {result.elapsed_s:.0f}s"
                           f"{' (budget reached)' if result.stopped_early else ''}; gate: agreement >= "
                           f"{result.min_agreement:g}"))
    out.print(f"wrote {result.table_json} and {result.table_csv}", highlight=False, soft_wrap=True)
    if result.chosen is None:
        raise AiforgeError(f"no setting reached the agreement gate ({result.min_agreement:g}); nothing registered.")
    if result.version is not None:
        c = result.chosen
        batching = (f"batch {c['max_batch_size']}, wait {c['max_wait_ms']:g} ms" if c["max_batch_size"] is not None
                    else "batching not measured within the budget: unchanged")
        out.print(f"registered {result.name}:{result.version} ({c['recipe']}, level {c['graph_optimization_level']}, "
                  f"{c['intra_op_threads']} threads, {batching})", highlight=False, soft_wrap=True)


# Commands of each kind (its row's ``commands``: a ``register(app)`` function). Imported at start-up,
# so a kind's commands module imports its heavy dependencies inside the commands.
for _kind in KINDS:
    if _kind.commands:
        resolve(_kind.commands)(app)


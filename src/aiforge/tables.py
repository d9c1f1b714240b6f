"""Rich tables shared by the CLI and the tasks' summaries."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.table import Table

from aiforge.audit.baseline import BaselineReport

if TYPE_CHECKING:
    from rich.console import RenderableType

__all__ = ["baseline_summary", "metrics_table", "per_class_table"]


def metrics_table(title: str, rows: dict[str, dict[str, float] | None]) -> Table:
    table = Table(title=title)
    for col in ("split", "n", "accuracy", "macro-F1", "top-5 accuracy"):
        table.add_column(col, justify="right" if col != "split" else "left")
    for split, m in rows.items():
        if m:
            table.add_row(split, str(m.get("n", "")), f"{m['accuracy']:.4f}", f"{m['macro_f1']:.4f}",
                          f"{m['top5_accuracy']:.4f}")
    return table


def per_class_table(metrics: dict[str, Any], limit: int = 10) -> Table:
    table = Table(title=f"hardest {limit} classes (by F1)")
    for col in ("label", "precision", "recall", "F1", "support"):
        table.add_column(col, justify="left" if col == "label" else "right")
    worst = sorted(metrics["per_class"].items(), key=lambda kv: kv[1]["f1"])[:limit]
    for label, s in worst:
        table.add_row(label, f"{s['precision']:.3f}", f"{s['recall']:.3f}", f"{s['f1']:.3f}", str(s["support"]))
    return table


def baseline_summary(report: BaselineReport | None) -> list[RenderableType]:
    """The "model vs baseline" table (a row for the model, one per baseline) and its lines, for ``aiforge train``."""
    if report is None:
        return []
    if report.skipped and not report.candidates:
        return [f"baseline: skipped ({report.reason})"]
    table = Table(title=f"model vs simple baselines ({report.metric}; best chosen on validation)")
    for col in ("", "validation", "test", "wall s"):
        table.add_column(col, justify="left" if not col else "right")

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    table.add_row("model", cell(report.model_validation), cell(report.model_test), f"{report.fit_seconds:.1f}")
    for c in report.candidates:
        mark = " (best)" if c.name == report.best else ""
        if c.skipped:
            table.add_row(f"baseline: {c.name}", "skipped", "", c.reason)
        else:
            table.add_row(f"baseline: {c.name}{mark}", cell(c.validation), cell(c.test), f"{c.seconds:.1f}")
    lines: list[RenderableType] = [f"[bold yellow]{line}[/]" if line.startswith(("WARNING", "hint")) else line
                                   for line in report.lines()]
    return [table, *lines]

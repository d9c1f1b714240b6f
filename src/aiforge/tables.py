"""Rich tables shared by the CLI and the tasks' summaries."""

from __future__ import annotations

from typing import Any

from rich.table import Table

__all__ = ["metrics_table", "per_class_table"]


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

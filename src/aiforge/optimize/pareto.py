"""The sweep's table: Pareto front, the chosen row, JSON + CSV files and a rich table."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from rich.table import Table

__all__ = ["COLUMNS", "choose", "mark_pareto", "render", "write_table"]

COLUMNS = ("recipe", "precision", "graph_optimization_level", "intra_op_threads", "max_batch_size", "max_wait_ms",
           "offline_items_per_s", "lo_items_per_s", "lo_p50_ms", "lo_p99_ms", "hi_items_per_s", "hi_p50_ms",
           "hi_p99_ms", "agreement_with_fp32", "max_abs_prob_diff", "size_mb", "rss_mb", "gate", "pareto", "chosen")

# (column, larger is better) of the Pareto front: served throughput and p99 at the high concurrency,
# agreement with fp32 and graph size
_OBJECTIVES = (("hi_items_per_s", True), ("hi_p99_ms", False), ("agreement_with_fp32", True), ("size_mb", False))


def _dominates(a: dict[str, Any], b: dict[str, Any]) -> bool:
    better = False
    for key, up in _OBJECTIVES:
        x, y = a[key], b[key]
        if (x < y) if up else (x > y):
            return False
        better |= (x > y) if up else (x < y)
    return better


def mark_pareto(rows: list[dict[str, Any]]) -> None:
    """Set ``pareto`` on every served row no other served row beats on every objective."""
    served = [r for r in rows if r.get("hi_items_per_s") is not None]
    for r in rows:
        r["pareto"] = r in served and not any(_dominates(o, r) for o in served if o is not r)


def choose(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The fastest served row that passes the gate (p99 breaks ties); else the fastest graph offline
    that passes (batching left as the bundle had it); None when no row passes."""
    passing = [r for r in rows if r["gate"] == "pass"]
    served = [r for r in passing if r.get("hi_items_per_s") is not None]
    if served:
        best = max(served, key=lambda r: (r["hi_items_per_s"], -r["hi_p99_ms"]))
    elif passing:
        best = max(passing, key=lambda r: r["offline_items_per_s"])
    else:
        return None
    for r in rows:
        r["chosen"] = r is best
    return best


def write_table(rows: list[dict[str, Any]], folder: Path, *, meta: dict[str, Any]) -> tuple[Path, Path]:
    """``pareto.json`` (meta + rows) and ``pareto.csv`` (rows) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    table = [{c: r.get(c) for c in COLUMNS} for r in rows]
    as_json = folder / "pareto.json"
    as_json.write_text(json.dumps({**meta, "columns": list(COLUMNS), "rows": table}, indent=2), encoding="utf-8")
    as_csv = folder / "pareto.csv"
    with as_csv.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(COLUMNS))
        writer.writeheader()
        writer.writerows(table)
    return as_json, as_csv


def render(rows: list[dict[str, Any]], *, concurrencies: tuple[int, int], title: str) -> Table:
    """The rows as a rich table (Pareto rows starred, the chosen one marked)."""
    lo, hi = concurrencies
    table = Table(title=title, title_justify="left")
    for head in ("recipe", "level", "thr", "batch", "wait", "offline/s", f"c{lo} /s", f"c{lo} p99",
                 f"c{hi} /s", f"c{hi} p50", f"c{hi} p99", "agree", "MB", "RSS", "gate", ""):
        table.add_column(head, justify="left" if head in ("recipe", "level", "gate") else "right")

    def f(value: Any, fmt: str = "{:.0f}") -> str:
        return "-" if value is None else fmt.format(value)

    for r in rows:
        mark = "chosen" if r.get("chosen") else "*" if r.get("pareto") else ""
        table.add_row(r["recipe"], r["graph_optimization_level"], str(r["intra_op_threads"]),
                      f(r.get("max_batch_size"), "{}"), f(r.get("max_wait_ms"), "{:g}"), f(r["offline_items_per_s"]),
                      f(r.get("lo_items_per_s")), f(r.get("lo_p99_ms"), "{:.1f}"), f(r.get("hi_items_per_s")),
                      f(r.get("hi_p50_ms"), "{:.1f}"), f(r.get("hi_p99_ms"), "{:.1f}"),
                      f"{r['agreement_with_fp32']:.4f}", f"{r['size_mb']:.1f}", f"{r['rss_mb']:.0f}", r["gate"], mark)
    return table

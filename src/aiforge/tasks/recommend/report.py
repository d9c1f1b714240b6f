"""The popularity-bias HTML report: model comparison and the re-ranking trade-off curve."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

from aiforge.audit.baseline import BaselineReport

__all__ = ["rerank_report_html"]


def _curve_png(curve: list[dict[str, Any]], k: int) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    xs = [c["coverage"] for c in curve]
    ys = [c["ndcg"] for c in curve]
    ax.plot(xs, ys, marker="o")
    for c in curve:
        ax.annotate(f"λ={c['penalty']:g}", (c["coverage"], c["ndcg"]), textcoords="offset points", xytext=(4, 4),
                    fontsize=8)
    ax.set_xlabel("catalogue coverage")
    ax.set_ylabel(f"NDCG@{k}")
    ax.set_title("popularity-penalised re-ranking")
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{v:.4f}</td>" if isinstance(v, float) else f"<td>{html.escape(str(v))}</td>"
                         for v in (r.get(c, "") for c in cols)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def rerank_report_html(name: str, *, k: int, models: dict[str, dict[str, Any]], curve: list[dict[str, Any]],
                       algorithm: str, baseline: BaselineReport | None = None) -> str:
    """A self-contained page (the plot is an embedded PNG) for ``report.html`` in the bundle.

    ``baseline`` (the fit's simple baselines) adds its section under the models' table.
    """
    cols = ["model", "ndcg", "precision", "recall", "map", "hit_rate", "coverage", "avg_popularity", "gini",
            "long_tail_share"]
    rows = [{"model": m, **v} for m, v in models.items()]
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(name)}: popularity bias</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;
padding:4px 8px;text-align:right}}</style></head><body>
<h1>{html.escape(name)}: accuracy and popularity bias at k={k}</h1>
<h2>Models on the test split</h2>{_table(rows, cols)}
{baseline.html() if baseline else ""}
<h2>Re-ranking {html.escape(algorithm)}: score/max|score| − λ · log-popularity share</h2>
<img alt="NDCG against coverage" src="data:image/png;base64,{_curve_png(curve, k)}">
{_table(curve, ["penalty", "ndcg", "coverage", "gini", "long_tail_share", "avg_popularity"])}
<p>Coverage: share of the catalogue recommended to at least one test user. Gini: inequality of item
exposure (0 equal, 1 one item). Long tail: slots given to items outside the short head (the most
popular items that together hold 20% of training positives).</p>
</body></html>"""

"""The self-contained HTML audit report: tables plus matplotlib plots embedded as base64 PNGs."""

from __future__ import annotations

import base64
import html
import io
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from aiforge.audit.baseline import BaselineReport
    from aiforge.tasks.tabular.fitted import TabularAudit


__all__ = ["html_report", "plot_pngs"]


_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _rates_plot(name: str, feat: dict[str, Any]) -> bytes:
    import matplotlib.pyplot as plt

    groups = list(feat["groups"])
    metrics = [("selection_rate", "selection rate"), ("tpr", "true positive rate"), ("fpr", "false positive rate"),
               ("accuracy", "accuracy")]
    fig, ax = plt.subplots(figsize=(8.5, 0.55 * len(groups) * len(metrics) / 2 + 2.2))
    height = 0.8 / len(metrics)
    y = np.arange(len(groups))
    for j, (key, label) in enumerate(metrics):
        vals = [feat["groups"][g][key] for g in groups]
        bars = ax.barh(y + j * height, vals, height, label=label, color=_COLORS[j])
        for bar, g in zip(bars, groups, strict=True):
            if feat["groups"][g]["too_small"]:  # shown, but faded: too few rows to judge
                bar.set_alpha(0.3)
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in vals], fontsize=8, padding=2)
    ax.set_yticks(y + height * (len(metrics) - 1) / 2)
    names = [f"{g} (n={int(r['count'])}{', too small' if r['too_small'] else ''})"
             for g, r in feat["groups"].items()]
    ax.set_yticklabels(names, fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.12)
    ax.set_xlabel("rate")
    ax.set_title(f"Selection and error rates by {name}")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1 if len(groups) > 4 else -0.18), ncol=4, fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def _curves_plot(name: str, audit: TabularAudit, groups: np.ndarray, judged: list[str]) -> bytes:
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, (roc, cal) = plt.subplots(1, 2, figsize=(11, 4.6))
    for i, g in enumerate(judged[:8]):
        mask = groups == g
        y, s = audit.y_true[mask], audit.y_score[mask]
        color = _COLORS[i % len(_COLORS)]
        if 0 < y.sum() < len(y):
            fpr, tpr, _ = roc_curve(y, s)
            roc.plot(fpr, tpr, color=color, label=f"{g} (AUC {roc_auc_score(y, s):.3f})")
            # the served operating point of this group
            pred = audit.y_pred[mask]
            roc.scatter([np.mean(pred[y == 0])], [np.mean(pred[y == 1])], color=color, s=40, zorder=3,
                        edgecolor="black")
        bins = 10 if mask.sum() >= 200 else 5
        prob_true, prob_pred = calibration_curve(y, np.clip(s, 0, 1), n_bins=bins, strategy="quantile")
        cal.plot(prob_pred, prob_true, marker="o", color=color, label=str(g))
    roc.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
    roc.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC by {name} (dot: served threshold)")
    cal.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfectly calibrated")
    cal.set(xlabel="predicted probability of the positive class", ylabel="observed positive rate",
            title=f"Calibration by {name}")
    for ax in (roc, cal):
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def _err(t: dict[str, Any], key: str) -> list[float]:
    iv = (t.get("intervals") or {}).get(key)
    v = float(t[key])
    return [v - iv[0], iv[1] - v] if iv else [0.0, 0.0]


def _tradeoff_plot(tradeoff: list[dict[str, Any]]) -> bytes | None:
    """Accuracy vs DP and vs EO difference of every candidate, validation and test, with 95% intervals."""
    import matplotlib.pyplot as plt

    points = [t for t in tradeoff if "demographic_parity_difference" in t]
    if len(points) < 2:
        return None
    gaps = [("demographic_parity_difference", "demographic parity difference"),
            ("equalized_odds_difference", "equalized odds difference")]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    for ax, (key, label) in zip(axes, gaps, strict=True):
        for i, t in enumerate(points):
            color = _COLORS[i % len(_COLORS)]
            name = f"{t['setting']}{' (shipped)' if t.get('shipped') else ''}"
            for side, row, marker in (("validation", t.get("validation"), "o"), ("test", t, "s")):
                if not row or key not in row:
                    continue
                ax.errorbar(row[key], row["accuracy"], xerr=np.array([_err(row, key)]).T,
                            yerr=np.array([_err(row, "accuracy")]).T, fmt=marker, color=color, capsize=3,
                            markersize=9 if t.get("shipped") else 6, alpha=1.0 if side == "test" else 0.55,
                            markeredgecolor="black" if t.get("shipped") else color,
                            label=f"{name}, {side}" if key == gaps[0][0] else None)
        ax.set(xlabel=f"{label} (lower is fairer)", title=f"accuracy vs {label}")
        ax.grid(alpha=0.3)
        ax.set_xlim(left=0)
    axes[0].set_ylabel("accuracy")
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle("Mitigation candidates: validation (o, chose) and held-out test (s, reports); bars: 95% intervals")
    return _png(fig)


def plot_pngs(audit: TabularAudit, tradeoff: list[dict[str, Any]]) -> dict[str, bytes]:
    """Every plot of the report, by name (also used to look at them outside the HTML)."""
    import matplotlib

    matplotlib.use("Agg")
    pngs: dict[str, bytes] = {}
    for name, feat in audit.report["features"].items():
        pngs[f"rates: {name}"] = _rates_plot(name, feat)
        if " & " in name:
            continue
        groups = audit.sensitive[name].astype(str).to_numpy()
        judged = feat.get("judged_groups", [])
        if judged:
            pngs[f"curves: {name}"] = _curves_plot(name, audit, groups, judged)
    trade = _tradeoff_plot(tradeoff)
    if trade is not None:
        pngs["trade-off"] = trade
    return pngs


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "n/a" if np.isnan(v) else f"{v:.4f}"
    return html.escape(str(v))


def _feature_section(name: str, feat: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr{' class=small' if r['too_small'] else ''}><td>{html.escape(g)}</td>"
        + "".join(f"<td>{_fmt(r[m]) if m != 'count' else int(r[m])}</td>"
                  for m in ("count", "selection_rate", "accuracy", "tpr", "fpr", "precision"))
        + f"<td>{'too small to judge' if r['too_small'] else ''}</td></tr>"
        for g, r in feat["groups"].items())
    parts = [f"<h2>{html.escape(name)}</h2><table><tr><th>group</th><th>count</th><th>selection rate</th>"
             f"<th>accuracy</th><th>TPR</th><th>FPR</th><th>precision</th><th></th></tr>{rows}</table>"]
    if "note" in feat:
        parts.append(f"<p class=warn>{html.escape(feat['note'])}</p>")
        return "".join(parts)
    iv = feat.get("intervals", {})

    def ci(key: str) -> str:
        return f" (95% CI {iv[key][0]:.4f} – {iv[key][1]:.4f})" if key in iv else ""

    ff = feat["four_fifths"]
    parts.append(
        "<ul>"
        f"<li>Demographic parity difference: <b>{feat['demographic_parity_difference']:.4f}</b>"
        f"{ci('demographic_parity_difference')}; ratio {feat['demographic_parity_ratio']:.4f}</li>"
        f"<li>Equalized odds difference: <b>{feat['equalized_odds_difference']:.4f}</b>"
        f"{ci('equalized_odds_difference')}</li>"
        f"<li>Accuracy difference: {feat['difference']['accuracy']:.4f}{ci('accuracy_difference')}</li>"
        f"<li>Four-fifths rule (selection rate / that of the largest group, {html.escape(ff['reference_group'])}): "
        + ", ".join(f"{html.escape(g)} {r:.3f}" for g, r in ff["ratios"].items())
        + (f" — <span class=warn>flagged: {html.escape(', '.join(ff['flagged_groups']))}</span>"
           if ff["flagged_groups"] else " — passes") + "</li>"
        + (f"<li class=warn>Too small to judge (&lt; {feat['min_group_size']} rows): "
           f"{html.escape(', '.join(feat['small_groups']))}</li>" if feat["small_groups"] else "")
        + "</ul>")
    return "".join(parts)


def _ci(row: dict[str, Any] | None, key: str) -> str:
    if not row or key not in row:
        return "n/a"
    iv = (row.get("intervals") or {}).get(key)
    return _fmt(row[key]) + (f" [{iv[0]:.3f}, {iv[1]:.3f}]" if iv else "")


def html_report(audit: TabularAudit, *, title: str, tradeoff: list[dict[str, Any]],
                baseline: BaselineReport | None = None) -> str:
    """One HTML page with no external resources: overall numbers, the baseline, per-feature tables, plots."""
    o = audit.report["overall"]
    pngs = plot_pngs(audit, tradeoff)
    imgs = "".join(f"<figure><img alt='{html.escape(k)}' src='data:image/png;base64,"
                   f"{base64.b64encode(v).decode()}'><figcaption>{html.escape(k)}</figcaption></figure>"
                   for k, v in pngs.items())
    sections = "".join(_feature_section(n, f) for n, f in audit.report["features"].items())
    trade_rows = "".join(
        f"<tr><td>{html.escape(t['setting'])}{' (shipped)' if t.get('shipped') else ''}</td>"
        + "".join(f"<td>{_ci(row, k)}</td>" for row in (t.get("validation"), t)
                  for k in ("accuracy", "demographic_parity_difference", "equalized_odds_difference"))
        + f"<td>{html.escape(str(t.get('verdict', '')))}</td></tr>" for t in tradeoff)
    trade = ("<h2>Mitigation candidates (chosen on validation, reported on test)</h2><table><tr><th>setting</th>"
             "<th>val. accuracy</th><th>val. DP diff.</th><th>val. EO diff.</th><th>test accuracy</th>"
             f"<th>test DP diff.</th><th>test EO diff.</th><th>verdict</th></tr>{trade_rows}</table>"
             if tradeoff else "")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1em; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
tr.small td {{ color: #888; font-style: italic; }}
.warn {{ color: #b00; }}
figure {{ margin: 1em 0; }} img {{ max-width: 100%; }}
figcaption {{ color: #666; font-size: 0.85em; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Computed from the exported ONNX graph's predictions (label = positive iff P(positive) &gt; 0.5) on
{o['n']} rows: accuracy <b>{o['accuracy']:.4f}</b>, ROC AUC {_fmt(o['roc_auc'])}, selection rate
{o['selection_rate']:.4f}, base rate {o['base_rate']:.4f}. Groups with fewer than
{audit.report['settings']['min_group_size']} rows are reported but not judged; intervals are bootstrap
percentiles over {audit.report['settings']['bootstrap']} resamples.</p>
{baseline.html() if baseline else ""}{trade}{sections}<h2>Plots</h2>{imgs}
</body></html>
"""

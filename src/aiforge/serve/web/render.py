"""The pages' content rendered on the server, so they read without JavaScript (which then only enhances them).

Every string that reaches the HTML (model names, labels, card text, metric keys, file names) goes
through :func:`html.escape`; the card's Markdown is rendered by the same small subset the page's
``md.js`` knows (headings, paragraphs, lists, tables, code, ``**bold**``, `` `code` ``), building
tags only from the Markdown syntax and escaping every piece of text inside them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import quote

__all__ = ["baseline_html", "fmt", "home_content", "markdown_html", "model_content", "size"]

_HEADLINE = 3
_LIST = re.compile(r"^\s*([-*]|\d+\.)\s+")
_PARA_END = re.compile(r"^(#{1,6}\s|```|\s*([-*]|\d+\.)\s+|\s*\|)")
_INLINE = re.compile(r"(\*\*[^*]+\*\*|`[^`]+`)")


def fmt(value: Any) -> str:
    """A value as the page's ``fmt()`` shows it (numbers trimmed, long lists cut, None as a dash)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        if value != 0 and abs(value) < 1e-3:
            return f"{value:.2e}"
        return f"{value:.4f}".rstrip("0").rstrip(".")
    if value is None:
        return "–"
    if isinstance(value, list) and len(value) > 24:
        return f"[{', '.join(fmt(v) for v in value[:24])}, … {len(value) - 24} more]"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def size(n: int) -> str:
    """Bytes as the page's ``bytes()`` shows them."""
    for bound, unit, digits in ((1e9, "GB", 2), (1e6, "MB", 1), (1e3, "kB", 1)):
        if n >= bound:
            return f"{n / bound:.{digits}f} {unit}"
    return f"{n} B"


def _e(value: Any) -> str:
    return escape(fmt(value), quote=True)


def _table(rows: list[dict[str, Any]], columns: list[str] | None = None, testid: str | None = None) -> str:
    cols = columns or list(dict.fromkeys(k for r in rows for k in r))
    tid = f' data-testid="{escape(testid)}"' if testid else ""
    head = "".join(f"<th>{escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_e(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table{tid}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _kv(obj: dict[str, Any], testid: str) -> str:
    rows: list[tuple[str, Any]] = []

    def walk(o: dict[str, Any], prefix: str) -> None:
        for k, v in o.items():
            name = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict):
                walk(v, name)
            else:
                rows.append((name, v))

    walk(obj, "")
    cells = []
    for name, v in rows:
        if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            cell = f'<div class="scroll">{_table(v)}</div>'
        else:
            cell = _e(v)
        cells.append(f'<tr><th scope="row">{escape(name)}</th><td>{cell}</td></tr>')
    return f'<table class="kv" data-testid="{escape(testid)}"><tbody>{"".join(cells)}</tbody></table>'


# ----- Markdown (the card) --------------------------------------------------------------------

def _inline(text: str) -> str:
    out, last = [], 0
    for m in _INLINE.finditer(text):
        out.append(escape(text[last:m.start()]))
        token = m.group(0)
        out.append(f"<strong>{escape(token[2:-2])}</strong>" if token.startswith("**")
                   else f"<code>{escape(token[1:-1])}</code>")
        last = m.end()
    out.append(escape(text[last:]))
    return "".join(out)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in re.sub(r"\|$", "", re.sub(r"^\|", "", line.strip())).split("|")]


def markdown_html(source: str) -> str:
    """The card's Markdown as escaped HTML (the subset ``md.js`` renders)."""
    lines = source.replace("\r\n", "\n").split("\n")
    parts: list[str] = []
    if lines and lines[0] == "---" and "---" in lines[1:]:
        end = lines.index("---", 1)
        parts.append(f'<pre class="front-matter">{escape(chr(10).join(lines[1:end]))}</pre>')
        lines = lines[end + 1:]
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif line.startswith("```"):
            i += 1
            body = []
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            i += 1
            parts.append(f"<pre><code>{escape(chr(10).join(body))}</code></pre>")
        elif (h := re.match(r"^(#{1,6})\s+(.*)$", line)) is not None:
            level = min(6, len(h.group(1)) + 1)
            parts.append(f"<h{level}>{_inline(h.group(2))}</h{level}>")
            i += 1
        elif line.strip().startswith("|") and i + 1 < len(lines) and re.match(r"^\s*\|?\s*:?-{3,}", lines[i + 1]):
            head = _cells(line)
            i += 2
            rows = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            parts.append("<table><thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr></thead><tbody>"
                         + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rows)
                         + "</tbody></table>")
        elif _LIST.match(line):
            tag = "ol" if re.match(r"^\s*\d+\.", line) else "ul"
            items = []
            while i < len(lines) and _LIST.match(lines[i]):
                item = _LIST.sub("", lines[i], count=1)
                i += 1
                while i < len(lines) and re.match(r"^\s{2,}\S", lines[i]) and not _LIST.match(lines[i]):
                    item += " " + lines[i].strip()
                    i += 1
                items.append(f"<li>{_inline(item)}</li>")
            parts.append(f"<{tag}>{''.join(items)}</{tag}>")
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not _PARA_END.match(lines[i]):
                para.append(lines[i])
                i += 1
            if not para:
                para.append(lines[i])
                i += 1
            parts.append(f"<p>{_inline(' '.join(para))}</p>")
    return f'<div class="markdown">{"".join(parts)}</div>'


# ----- the home page ------------------------------------------------------------------------------

def _headline(metrics: dict[str, Any]) -> str:
    pairs = [(k, v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)][:_HEADLINE]
    return ", ".join(f"{k} {fmt(v)}" for k, v in pairs) or "–"


def home_content(rows: Iterable[dict[str, Any]]) -> str:
    """The model table of the home page (what ``home.js`` draws, with items/s filled in by it)."""
    rows = list(rows)
    if not rows:
        return "<p>No model is served (yet).</p>"
    head = "".join(f"<th>{c}</th>" for c in ("model", "kind", "version", "stage", "headline metrics", "size",
                                              "precision", "items/s"))
    body = []
    for m in rows:
        name = escape(str(m["name"]), quote=True)
        href = "/ui/models/" + escape(quote(str(m["name"]), safe=""), quote=True)
        stage = escape(str(m["stage"]), quote=True)
        body.append(f'<tr data-model="{name}"><td><a href="{href}">{name}</a></td><td>{escape(str(m["task"]))}</td>'
                    f'<td>{escape(str(m["version"]))}</td><td><span class="stage stage-{stage}">{stage}</span></td>'
                    f'<td>{escape(_headline(m.get("metrics") or {}))}</td><td>{size(int(m["size_bytes"]))}</td>'
                    f'<td>{escape(str(m["precision"]))}</td><td data-testid="items-{name}">–</td></tr>')
    return f'<table data-testid="models"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


# ----- a model page -------------------------------------------------------------------------------

def _summary(info: dict[str, Any]) -> str:
    stage = escape(str(info["stage"]), quote=True)
    facts = [("kind", escape(str(info["task"]))), ("version", escape(str(info["version"]))),
             ("stage", f'<span class="stage stage-{stage}" data-testid="stage">{stage}</span>'),
             ("precision", escape(str(info["precision"]))), ("size", size(int(info["size_bytes"]))),
             ("created", escape(str(info["created"])))]
    dl = "".join(f"<div><dt>{k}</dt><dd>{v}</dd></div>" for k, v in facts)
    return f'<div class="summary"><h1>{escape(str(info["name"]))}</h1><dl>{dl}</dl></div>'


def _metrics(info: dict[str, Any]) -> str:
    out = []
    if info.get("metrics"):
        out.append("<h3>Headline (manifest)</h3>" + _kv(info["metrics"], "headline"))
    report = info.get("report_metrics")
    if isinstance(report, dict):
        out.append("<h3>From the bundle's metrics.json</h3>"
                   + _kv({k: v for k, v in report.items() if k != "baseline"}, "report-metrics"))
    if info.get("parity"):
        out.append("<h3>Export parity</h3>" + _kv(info["parity"], "parity"))
    return "".join(out) or "<p>No metrics.</p>"


def baseline_html(baseline: dict[str, Any] | None) -> str:
    """The model against its best simple baseline: both scores, the difference with its interval, the warning."""
    if not isinstance(baseline, dict):
        return '<p data-testid="no-baseline">This bundle records no baseline comparison.</p>'
    if baseline.get("skipped"):
        return f'<p data-testid="baseline-skipped">Baseline skipped: {escape(str(baseline.get("reason") or ""))}</p>'
    model, base = baseline.get("model") or {}, baseline.get("baseline") or {}
    metric = escape(str(baseline.get("metric")))
    rows = [("model", model.get("validation"), model.get("test")),
            (f"best baseline: {baseline.get('best')}", base.get("validation"), base.get("test"))]
    body = "".join(f'<tr><th scope="row">{escape(str(n))}</th><td>{_e(v)}</td><td>{_e(t)}</td></tr>'
                   for n, v, t in rows)
    out = [f'<table data-testid="baseline-table"><thead><tr><th></th><th>validation {metric}</th><th>test {metric}</th>'
           f"</tr></thead><tbody>{body}</tbody></table>"]
    interval = baseline.get("interval")
    if baseline.get("difference") is not None and interval:
        pct = round(float(baseline.get("confidence") or 0) * 100)
        verdict = "beats" if baseline.get("beats_baseline") else "does not clearly beat"
        out.append(f'<p data-testid="baseline-diff">Model − best baseline on {_e(baseline.get("n"))} test items: '
                   f'<strong>{float(baseline["difference"]):+.4f}</strong> {metric} ({pct}% paired bootstrap interval '
                   f'{float(interval[0]):+.4f} to {float(interval[1]):+.4f}): the model '
                   f'<strong class="{"pass" if baseline.get("beats_baseline") else "fail"}">{verdict}</strong> it.</p>')
    if baseline.get("warning"):
        out.append(f'<p class="warning" role="alert" data-testid="baseline-warning">Warning: '
                   f'{escape(str(baseline["warning"]))}</p>')
    if baseline.get("hint"):
        out.append(f'<p>Hint: {escape(str(baseline["hint"]))}</p>')
    candidates = baseline.get("candidates") or []
    if candidates:
        out.append("<details><summary>Every baseline tried</summary>" + _table(candidates) + "</details>")
    return "".join(out)


def _gates(ship: dict[str, Any] | None) -> str:
    if not ship:
        return '<p data-testid="no-ship">This version has not been through aiforge ship on this registry.</p>'
    passed = bool(ship.get("passed"))
    at = ship.get("shipped_at")
    when = f", at {datetime.fromtimestamp(float(at), UTC).isoformat()}" if isinstance(at, int | float) else ""
    rows = "".join(f'<tr><td>{escape(str(g.get("key")))}</td><td>{_e(g.get("feature"))}</td>'
                   f'<td>{_e(g.get("limit"))}</td><td>{_e(g.get("measured"))}</td>'
                   f'<td class="{"pass" if g.get("passed") else "fail"}">'
                   f'{"pass" if g.get("passed") else "fail"}</td><td>{escape(str(g.get("note") or ""))}</td></tr>'
                   for g in ship.get("gates", []))
    head = "".join(f"<th>{c}</th>" for c in ("gate", "feature", "limit", "measured", "result", "note"))
    return (f'<p>Verdict: <strong class="{"pass" if passed else "fail"}" data-testid="ship-verdict">'
            f'{"passed" if passed else "failed"}</strong> — stage after ship: '
            f'{escape(str(ship.get("stage")))}{when}</p>'
            f'<table data-testid="gate-table"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>')


def _manifest(m: dict[str, Any]) -> str:
    rows = "".join(f'<tr><td>{escape(str(f["path"]))}</td>'
                   f'<td title="{int(f["size"])} bytes">{size(int(f["size"]))}</td>'
                   f'<td><code class="sha">{escape(str(f["sha256"]))}</code></td></tr>' for f in m["files"])
    signed = " (signed)" if m.get("signed") else " (not signed)"
    return (f'<p>Format {escape(str(m["format_version"]))}, digest <code>{escape(str(m["digest"]))}</code>{signed}</p>'
            f'<table data-testid="files"><thead><tr><th>file</th><th>size</th><th>sha256</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>")


def _fairness(fairness: dict[str, Any] | None) -> str:
    if not fairness:
        return "<p>This bundle carries no fairness audit.</p>"
    out = []
    for feature, f in fairness.items():
        rows = [{"group": group, **(g if isinstance(g, dict) else {"value": g})} for group, g in f["groups"].items()]
        diffs = ", ".join(f"{k} {fmt(v)}" for k, v in (f.get("difference") or {}).items())
        out.append(f'<div class="fair"><h3>{escape(str(feature))}</h3>{_table(rows, None, "fair-" + str(feature))}'
                   f"<p>Differences: {escape(diffs)}</p></div>")
    return "".join(out)


def _provenance(rows: list[dict[str, Any]] | None) -> str:
    if not rows:
        return "<p>The manifest names no licence.</p>"
    return _table(rows, ["role", "name", "licence", "provenance"], "provenance-table")


def model_content(info: dict[str, Any]) -> dict[str, str]:
    """Each section of the model page (by the id of its element) as escaped HTML."""
    card = info.get("card") or ""
    return {"summary": _summary(info), "card": markdown_html(card) if card else "<p>No card.md in this bundle.</p>",
            "metrics": _metrics(info), "baseline": baseline_html(info.get("baseline")),
            "fairness": _fairness(info.get("fairness")), "gates": _gates(info.get("ship")),
            "manifest": _manifest(info["manifest"]), "provenance": _provenance(info.get("provenance"))}

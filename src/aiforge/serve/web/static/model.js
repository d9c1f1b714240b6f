/* A model page: its kind's try-it panel, then card, metrics, fairness, report, gates, manifest, provenance. */
"use strict";
(function () {
  const A = window.aiforge;
  const { el, api, fmt, bytes, table, kvTable, errorBox, keyForm } = A;
  const $ = (id) => document.getElementById(id);
  const name = decodeURIComponent(location.pathname.replace(/^\/ui\/models\//, "").replace(/\/$/, ""));
  const base = "/v1/ui/models/" + encodeURIComponent(name);

  function summary(info) {
    const facts = [["kind", info.task], ["version", info.version],
      ["stage", el("span", { class: "stage stage-" + info.stage, "data-testid": "stage" }, info.stage)],
      ["precision", info.precision], ["size", bytes(info.size_bytes)], ["created", info.created]];
    return el("div", { class: "summary" }, el("h1", {}, info.name),
      el("dl", {}, facts.map(([k, v]) => el("div", {}, el("dt", {}, k), el("dd", {}, v)))));
  }

  function metrics(info) {
    const box = el("div", {});
    if (info.metrics && Object.keys(info.metrics).length) box.append(el("h3", {}, "Headline (manifest)"), kvTable(info.metrics, "headline"));
    if (info.report_metrics) {
      const rest = Object.assign({}, info.report_metrics); delete rest.baseline;  // shown in its own section
      box.append(el("h3", {}, "From the bundle's metrics.json"), kvTable(rest, "report-metrics"));
    }
    if (info.parity) box.append(el("h3", {}, "Export parity"), kvTable(info.parity, "parity"));
    return box;
  }

  /* The model against its best simple baseline: scores, the paired difference with its interval, the warning. */
  function baseline(info) {
    const b = info.baseline;
    if (!b) return el("p", { "data-testid": "no-baseline" }, "This bundle records no baseline comparison.");
    if (b.skipped) return el("p", { "data-testid": "baseline-skipped" }, "Baseline skipped: " + (b.reason || ""));
    const m = b.model || {}, s = b.baseline || {};
    const box = el("div", {}, el("table", { "data-testid": "baseline-table" },
      el("thead", {}, el("tr", {}, el("th", {}), el("th", {}, "validation " + b.metric), el("th", {}, "test " + b.metric))),
      el("tbody", {},
        el("tr", {}, el("th", { scope: "row" }, "model"), el("td", {}, fmt(m.validation)), el("td", {}, fmt(m.test))),
        el("tr", {}, el("th", { scope: "row" }, "best baseline: " + b.best), el("td", {}, fmt(s.validation)), el("td", {}, fmt(s.test))))));
    const sign = (x) => (x >= 0 ? "+" : "") + x.toFixed(4);
    if (b.difference !== null && b.difference !== undefined && b.interval) {
      box.append(el("p", { "data-testid": "baseline-diff" }, "Model − best baseline on " + fmt(b.n) + " test items: ",
        el("strong", {}, sign(b.difference)), " " + b.metric + " (" + Math.round((b.confidence || 0) * 100) +
        "% paired bootstrap interval " + sign(b.interval[0]) + " to " + sign(b.interval[1]) + "): the model ",
        el("strong", { class: b.beats_baseline ? "pass" : "fail" }, b.beats_baseline ? "beats" : "does not clearly beat"), " it."));
    }
    if (b.warning) box.append(el("p", { class: "warning", role: "alert", "data-testid": "baseline-warning" }, "Warning: " + b.warning));
    if (b.hint) box.append(el("p", {}, "Hint: " + b.hint));
    if ((b.candidates || []).length) box.append(el("details", {}, el("summary", {}, "Every baseline tried"), table(b.candidates)));
    return box;
  }

  function fairness(info) {
    if (!info.fairness) return el("p", {}, "This bundle carries no fairness audit.");
    return el("div", {}, Object.entries(info.fairness).map(([feature, f]) => {
      const rows = Object.entries(f.groups).map(([group, g]) => Object.assign({ group }, g));
      return el("div", { class: "fair" }, el("h3", {}, feature), table(rows, null, "fair-" + feature),
        el("p", {}, "Differences: ", Object.entries(f.difference || {}).map(([k, v]) => k + " " + fmt(v)).join(", ")));
    }));
  }

  function gates(info) {
    const ship = info.ship;
    if (!ship) return el("p", { "data-testid": "no-ship" }, "This version has not been through aiforge ship on this registry.");
    return el("div", {},
      el("p", {}, "Verdict: ", el("strong", { class: ship.passed ? "pass" : "fail", "data-testid": "ship-verdict" }, ship.passed ? "passed" : "failed"),
        " — stage after ship: " + ship.stage + (ship.shipped_at ? ", at " + new Date(ship.shipped_at * 1000).toISOString() : "")),
      el("table", { "data-testid": "gate-table" },
        el("thead", {}, el("tr", {}, ["gate", "feature", "limit", "measured", "result", "note"].map((c) => el("th", {}, c)))),
        el("tbody", {}, ship.gates.map((g) => el("tr", {},
          el("td", {}, g.key), el("td", {}, fmt(g.feature)), el("td", {}, fmt(g.limit)), el("td", {}, fmt(g.measured)),
          el("td", { class: g.passed ? "pass" : "fail" }, g.passed ? "pass" : "fail"), el("td", {}, g.note || ""))))));
  }

  function manifest(info) {
    const m = info.manifest;
    return el("div", {},
      el("p", {}, "Format " + m.format_version + ", digest ", el("code", {}, m.digest), m.signed ? " (signed)" : " (not signed)"),
      el("table", { "data-testid": "files" },
        el("thead", {}, el("tr", {}, ["file", "size", "sha256"].map((c) => el("th", {}, c)))),
        el("tbody", {}, m.files.map((f) => el("tr", {}, el("td", {}, f.path), el("td", { title: f.size + " bytes" }, bytes(f.size)),
          el("td", {}, el("code", { class: "sha" }, f.sha256)))))));
  }

  function provenance(info) {
    if (!info.provenance.length) return el("p", {}, "The manifest names no licence.");
    return table(info.provenance, ["role", "name", "licence", "provenance"], "provenance-table");
  }

  async function report(info) {
    if (!info.has_report) return el("p", {}, "This bundle has no report.html.");
    const html = await api.text(base + "/report");
    // sandbox without allow-scripts: the report's images and styles show, nothing in it can run.
    const frame = el("iframe", { sandbox: "", title: "report of " + info.name, class: "report", "data-testid": "report-frame" });
    frame.srcdoc = html;
    return frame;
  }

  function loadPanel(info) {
    const box = $("panel");
    const script = el("script", { src: "/ui/panels/" + encodeURIComponent(info.task) + ".js" });
    script.onload = () => {
      const panel = A.panels[info.task];
      box.replaceChildren();
      if (panel) panel(box, { name: info.name, info });
      else box.append(el("p", {}, "No try-it panel for " + info.task + "."));
    };
    script.onerror = () => box.replaceChildren(el("p", {}, "No try-it panel for " + info.task + "."));
    document.head.append(script);
  }

  async function load() {
    let info;
    try {
      info = await api.get(base);
    } catch (err) {
      if (err.status === 401) { api.clearKey(); $("auth").replaceChildren(keyForm(load)); $("panel").replaceChildren(); }
      else $("summary").replaceChildren(errorBox(err));
      document.body.dataset.rendered = "1";
      return;
    }
    $("auth").replaceChildren();
    document.title = "aiforge — " + info.name;
    $("title").textContent = info.name + " · " + info.task;
    $("summary").replaceChildren(summary(info));
    loadPanel(info);
    $("card").replaceChildren(info.card ? A.markdown(info.card) : el("p", {}, "No card.md in this bundle."));
    $("metrics").replaceChildren(metrics(info));
    $("baseline").replaceChildren(baseline(info));
    $("fairness").replaceChildren(fairness(info));
    $("gates").replaceChildren(gates(info));
    $("manifest").replaceChildren(manifest(info));
    $("provenance").replaceChildren(provenance(info));
    try { $("report").replaceChildren(await report(info)); } catch (err) { $("report").replaceChildren(errorBox(err)); }
    document.body.dataset.rendered = "1";
  }
  load();
})();

/* The home page: every served model and the server's live numbers (refreshed every 2 s). */
"use strict";
(function () {
  const { el, api, fmt, bytes, errorBox, keyForm } = window.aiforge;
  const $ = (id) => document.getElementById(id);
  const HEADLINE = 3;
  let timer = null;

  function headline(metrics) {
    const entries = Object.entries(metrics || {}).filter(([, v]) => typeof v === "number").slice(0, HEADLINE);
    return entries.length ? entries.map(([k, v]) => k + " " + fmt(v)).join(", ") : "–";
  }

  function modelsTable(body) {
    if (!body.models.length) return el("p", {}, body.loaded ? "No model is served." : "Models are loading…");
    return el("table", { "data-testid": "models" },
      el("thead", {}, el("tr", {}, ["model", "kind", "version", "stage", "headline metrics", "size", "precision", "items/s"].map((c) => el("th", {}, c)))),
      el("tbody", {}, body.models.map((m) => el("tr", { "data-model": m.name },
        el("td", {}, el("a", { href: "/ui/models/" + encodeURIComponent(m.name) }, m.name)),
        el("td", {}, m.task), el("td", {}, m.version),
        el("td", {}, el("span", { class: "stage stage-" + m.stage }, m.stage)),
        el("td", {}, headline(m.metrics)), el("td", {}, bytes(m.size_bytes)), el("td", {}, m.precision),
        el("td", { "data-testid": "items-" + m.name }, "–")))));
  }

  async function live() {
    try {
      const s = await api.get("/v1/ui/stats");
      $("live-window").textContent = "last " + Math.round(s.window_s) + " s";
      document.querySelector("[data-testid=rps]").textContent = s.requests_per_s.toFixed(2);
      document.querySelector("[data-testid=p50]").textContent = s.p50_ms === null ? "–" : s.p50_ms.toFixed(1);
      document.querySelector("[data-testid=p99]").textContent = s.p99_ms === null ? "–" : s.p99_ms.toFixed(1);
      document.querySelector("[data-testid=queue]").textContent = Object.values(s.queue_depth).reduce((a, b) => a + b, 0);
      for (const name of Object.keys(s.queue_depth)) {
        const rate = s.items_per_s[name] || 0;
        const cell = document.querySelector('[data-testid="items-' + CSS.escape(name) + '"]');
        if (cell) cell.textContent = rate.toFixed(2);
      }
      document.body.dataset.liveUpdates = String(Number(document.body.dataset.liveUpdates || 0) + 1);
    } catch (err) { /* the next tick tries again */ }
  }

  async function showHealth() {
    const box = $("health");
    box.replaceChildren();
    try {
      const r = await fetch("/v2/health/ready");
      const body = await r.json();
      box.append(el("p", {}, "Server ready: ", el("strong", {}, String(body.ready))),
        (body.errors || []).length ? el("ul", { class: "error" }, body.errors.map((e) => el("li", {}, e.source + ": " + e.error))) : "");
    } catch (err) { box.append(errorBox(err)); }
  }

  async function load() {
    const models = $("models");
    try {
      const body = await api.get("/v1/ui/models");
      $("auth").replaceChildren();
      models.replaceChildren(modelsTable(body));
      await showHealth();
      $("live").hidden = false;
      if (!timer) { live(); timer = setInterval(live, 2000); }
      if (!body.loaded) setTimeout(load, 1000);
    } catch (err) {
      if (err.status === 401) {  // without a key: only what /v2/health shows
        api.clearKey();
        $("live").hidden = true;
        models.replaceChildren(el("p", {}, "The model list needs an API key."));
        $("auth").replaceChildren(keyForm(load));
        await showHealth();
      } else models.replaceChildren(errorBox(err));
    }
    document.body.dataset.rendered = "1";
  }
  load();
})();

/* aiforge pages: shared helpers. Every string from the server is put in the page as a text node
   (el() and textContent only, never innerHTML), so no model output, label or card can run script. */
"use strict";
(function () {
  const KEY = "aiforge-api-key";

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  function key() { return sessionStorage.getItem(KEY) || ""; }
  function headers(extra) {
    const h = Object.assign({}, extra || {});
    if (key()) h["Authorization"] = "Bearer " + key();
    return h;
  }
  async function check(response) {
    if (response.ok) return response;
    let message = response.status + " " + response.statusText;
    try { const body = await response.json(); if (body && body.error) message = body.error; } catch (e) { /* not JSON */ }
    throw new ApiError(response.status, message);
  }
  const api = {
    async get(path) { return (await check(await fetch(path, { headers: headers() }))).json(); },
    async text(path) { return (await check(await fetch(path, { headers: headers() }))).text(); },
    /* A bundle file (sent with the key) as an object URL an <img> can show under the strict CSP. */
    async blobUrl(path) { return URL.createObjectURL(await (await check(await fetch(path, { headers: headers() }))).blob()); },
    async post(path, body) {
      const r = await fetch(path, { method: "POST", headers: headers({ "Content-Type": "application/json" }),
                                    body: JSON.stringify(body) });
      return (await check(r)).json();
    },
    async postForm(path, form) {
      return (await check(await fetch(path, { method: "POST", headers: headers(), body: form }))).json();
    },
    /* POST with stream: true; calls onData(obj) for each server-sent event until [DONE]. */
    async stream(path, body, onData) {
      const r = await check(await fetch(path, { method: "POST", body: JSON.stringify(body),
                                                headers: headers({ "Content-Type": "application/json" }) }));
      const reader = r.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const event = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
          for (const line of event.split("\n")) {
            if (!line.startsWith("data: ")) continue;
            const data = line.slice(6);
            if (data === "[DONE]") return;
            onData(JSON.parse(data));
          }
        }
      }
    },
    key, setKey(value) { sessionStorage.setItem(KEY, value); }, clearKey() { sessionStorage.removeItem(KEY); },
  };

  function shellQuote(s) { return "'" + String(s).replace(/'/g, "'\\''") + "'"; }
  /* The curl command for the same call (the key shown as $AIFORGE_KEY, never its value). */
  function curl(method, path, body, form) {
    const parts = ["curl"];
    if (method !== "GET") parts.push("-X", method);
    if (key()) parts.push("-H", '"Authorization: Bearer $AIFORGE_KEY"');
    if (form) for (const f of form) parts.push("-F", shellQuote(f));
    else if (body !== undefined) parts.push("-H", shellQuote("Content-Type: application/json"), "-d", shellQuote(JSON.stringify(body)));
    parts.push(shellQuote(location.origin + path));
    return parts.join(" ");
  }
  function curlBox(method, path, body, form) {
    return el("pre", { class: "curl", "data-testid": "curl" }, curl(method, path, body, form));
  }

  function fmt(value) {
    if (typeof value === "number") {
      if (Number.isInteger(value)) return String(value);
      if (value !== 0 && Math.abs(value) < 1e-3) return value.toExponential(2);
      return value.toFixed(4).replace(/0+$/, "").replace(/\.$/, "");
    }
    if (Array.isArray(value) && value.length > 24) return JSON.stringify(value.slice(0, 24)).replace(/\]$/, ", … " + (value.length - 24) + " more]");
    if (value === null || value === undefined) return "–";
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  }
  function bytes(n) {
    if (n >= 1e9) return (n / 1e9).toFixed(2) + " GB";
    if (n >= 1e6) return (n / 1e6).toFixed(1) + " MB";
    if (n >= 1e3) return (n / 1e3).toFixed(1) + " kB";
    return n + " B";
  }
  /* Horizontal bars: rows of {label, score} (score in 0..1). */
  function bars(rows, testid) {
    return el("ol", { class: "bars", "data-testid": testid || "bars" }, rows.map((r) =>
      el("li", {},
        el("span", { class: "bar-label" }, r.label),
        el("span", { class: "bar" }, el("span", { class: "fill", style: "width:" + (100 * Math.max(0, Math.min(1, r.score))).toFixed(1) + "%" })),
        el("span", { class: "bar-score" }, r.score.toFixed(4)))));
  }
  /* A table from rows of objects (columns: the union of keys, or the given ones). */
  function table(rows, columns, testid) {
    const cols = columns || [...new Set(rows.flatMap((r) => Object.keys(r)))];
    return el("table", { "data-testid": testid || null },
      el("thead", {}, el("tr", {}, cols.map((c) => el("th", {}, c)))),
      el("tbody", {}, rows.map((r) => el("tr", {}, cols.map((c) => el("td", {}, fmt(r[c])))))));
  }
  /* Flat key/value table of a (nested) object: nested keys joined with dots. */
  function kvTable(obj, testid) {
    const rows = [];
    (function walk(o, prefix) {
      for (const [k, v] of Object.entries(o || {})) {
        const name = prefix ? prefix + "." + k : k;
        if (v && typeof v === "object" && !Array.isArray(v)) walk(v, name);
        else rows.push({ name, value: v });
      }
    })(obj, "");
    return el("table", { class: "kv", "data-testid": testid || null },
      el("tbody", {}, rows.map((r) => el("tr", {}, el("th", { scope: "row" }, r.name),
        el("td", {}, Array.isArray(r.value) && r.value.length && r.value.every((x) => x && typeof x === "object" && !Array.isArray(x))
          ? el("div", { class: "scroll" }, table(r.value)) : fmt(r.value))))));
  }
  function errorBox(err) { return el("p", { class: "error", role: "alert" }, String(err.message || err)); }

  /* The key form: shown once when the server answers 401; the key lives in this tab's sessionStorage. */
  function keyForm(onKey) {
    const input = el("input", { type: "password", id: "api-key", autocomplete: "off", placeholder: "API key" });
    return el("form", { class: "key-form", "data-testid": "key-form", onsubmit: (e) => { e.preventDefault(); api.setKey(input.value.trim()); onKey(); } },
      el("label", { for: "api-key" }, "This server needs an API key (sent as Authorization: Bearer, like the API):"), " ",
      input, " ", el("button", { type: "submit" }, "Use key"));
  }

  window.aiforge = { el, api, ApiError, curl, curlBox, fmt, bytes, bars, table, kvTable, errorBox, keyForm, panels: {} };
})();

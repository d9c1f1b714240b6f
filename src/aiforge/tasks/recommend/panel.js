/* Try-it panel of recommendation: a known user or some liked items -> ranked items with metadata
   (POST /v1/models/NAME/recommend), and the items similar to one (POST /v1/models/NAME/similar). */
"use strict";
window.aiforge.panels["recommendation"] = function (root, ctx) {
  const { el, api, fmt, curlBox, errorBox } = window.aiforge;
  const base = "/v1/models/" + encodeURIComponent(ctx.name);
  const ex = ctx.info.examples || { users: [], items: [] };
  const title = (it) => it.metadata && (it.metadata.title || it.metadata.name) ? it.item + " · " + (it.metadata.title || it.metadata.name) : it.item;
  const user = el("select", { "data-testid": "user" }, el("option", { value: "" }, "(a new user)"), ex.users.map((u) => el("option", { value: u }, u)));
  const liked = el("select", { multiple: true, size: 6, "data-testid": "liked" }, ex.items.map((it) => el("option", { value: it.item }, title(it))));
  const k = el("input", { type: "number", min: 1, max: 50, value: 10, "data-testid": "k" });
  const similarTo = el("select", { "data-testid": "similar-item" }, ex.items.map((it) => el("option", { value: it.item }, title(it))));
  const out = el("div", { "data-testid": "output" });
  const curl = el("div", {});
  function ranked(rows, testid) {
    return el("table", { "data-testid": testid },
      el("thead", {}, el("tr", {}, ["rank", "item", "score", "metadata"].map((c) => el("th", {}, c)))),
      el("tbody", {}, rows.map((r) => el("tr", { "data-item": r.item }, el("td", {}, r.rank), el("td", {}, r.item), el("td", {}, fmt(r.score)),
        el("td", {}, Object.entries(r.metadata || {}).map(([key, v]) => key + ": " + fmt(v)).join(" · "))))));
  }
  async function recommend(e) {
    e.preventDefault();
    const body = { k: Number(k.value) || 10 };
    if (user.value) body.user = user.value;
    const items = [...liked.selectedOptions].map((o) => o.value);
    if (items.length) body.items = items;
    curl.replaceChildren(curlBox("POST", base + "/recommend", body));
    try {
      const res = await api.post(base + "/recommend", body);
      out.replaceChildren(el("p", {}, res.cold_start ? "Cold start (a user the model has not seen)." : "Known user " + res.user + "."),
        ranked(res.recommendations, "result"));
    } catch (err) { out.replaceChildren(errorBox(err)); }
  }
  async function similar(e) {
    e.preventDefault();
    const body = { item: similarTo.value, k: Number(k.value) || 10 };
    curl.replaceChildren(curlBox("POST", base + "/similar", body));
    try {
      const res = await api.post(base + "/similar", body);
      out.replaceChildren(el("p", {}, "Items similar to " + res.item + ":"), ranked(res.similar, "similar-result"));
    } catch (err) { out.replaceChildren(errorBox(err)); }
  }
  root.append(
    el("form", { class: "try", onsubmit: recommend },
      el("div", { class: "row" }, el("label", {}, "Known user ", user), el("label", {}, "how many ", k)),
      el("label", {}, "or items liked (popular items; Ctrl-click for several)", liked),
      el("div", { class: "row" }, el("button", { type: "submit", "data-testid": "submit" }, "Recommend"))),
    el("form", { class: "try", onsubmit: similar },
      el("div", { class: "row" }, el("label", {}, "Items like ", similarTo), el("button", { type: "submit", class: "secondary", "data-testid": "similar" }, "Find similar"))),
    out, curl);
};

/* Try-it panel of tabular-classification: a form from the bundle's input schema -> label and probability. */
"use strict";
window.aiforge.panels["tabular-classification"] = function (root, ctx) {
  const { el, api, bars, curlBox, errorBox } = window.aiforge;
  const path = "/v1/models/" + encodeURIComponent(ctx.name) + "/predict";
  const form = ctx.info.examples || { fields: [] };
  const inputs = {};
  const fields = el("div", { class: "fields" }, form.fields.map((f) => {
    let input;
    if (f.allowed && f.allowed.length) {
      input = el("select", { name: f.name, "data-field": f.name },
        f.required ? null : el("option", { value: "" }, "(missing)"),
        f.allowed.map((v) => el("option", { value: v, selected: String(f.example) === v }, v)));
    } else {
      input = el("input", { name: f.name, "data-field": f.name, type: f.kind === "numeric" ? "number" : "text", step: "any",
                            value: f.example === null || f.example === undefined ? "" : f.example, required: f.required });
    }
    inputs[f.name] = f;
    const note = f.role === "sensitive" ? " (sensitive, required by this model)" : f.required ? "" : " (optional)";
    return el("label", { class: f.role === "sensitive" ? "sensitive" : "" }, f.name + " · " + f.kind + note, input);
  }));
  function record() {
    const r = {};
    for (const node of fields.querySelectorAll("[data-field]")) {
      const f = inputs[node.dataset.field];
      if (node.value === "") { if (f.required) r[f.name] = f.kind === "numeric" ? null : ""; continue; }
      r[f.name] = f.kind === "numeric" ? Number(node.value) : node.value;
    }
    return r;
  }
  const out = el("div", { "data-testid": "output" });
  const curl = el("div", {});
  async function run(e) {
    e.preventDefault();
    const body = { inputs: [record()] };
    curl.replaceChildren(curlBox("POST", path, body));
    try {
      const p = (await api.post(path, body)).predictions[0];
      out.replaceChildren(el("p", {}, "Label: ", el("strong", { "data-testid": "label" }, p.label),
        " with probability ", el("strong", { "data-testid": "score" }, p.score.toFixed(4))),
        bars(Object.entries(p.scores).map(([label, score]) => ({ label, score })), "result"));
    } catch (err) { out.replaceChildren(errorBox(err)); }
  }
  const sensitive = form.sensitive_at_prediction && form.sensitive_at_prediction.length
    ? el("p", {}, "This model's mitigation needs the sensitive column(s) at prediction: " + form.sensitive_at_prediction.join(", ")) : null;
  root.append(el("form", { class: "try", onsubmit: run }, sensitive, fields,
    el("div", { class: "row" }, el("button", { type: "submit", "data-testid": "submit" }, "Predict"))), out, curl);
};

/* Try-it panel of text-classification: a sentence -> the top-5 labels with bars (POST /v1/models/NAME/predict). */
"use strict";
window.aiforge.panels["text-classification"] = function (root, ctx) {
  const { el, api, bars, curlBox, errorBox } = window.aiforge;
  const path = "/v1/models/" + encodeURIComponent(ctx.name) + "/predict";
  const input = el("textarea", { id: "text-input", "data-testid": "input", placeholder: "Type a sentence…" });
  const out = el("div", { "data-testid": "output" });
  const curl = el("div", {});
  async function run(e) {
    e.preventDefault();
    const body = { inputs: [input.value], top_k: 5 };
    curl.replaceChildren(curlBox("POST", path, body));
    try {
      const res = await api.post(path, body);
      const p = res.predictions[0];
      out.replaceChildren(el("p", {}, "Label: ", el("strong", { "data-testid": "label" }, p.label)),
        bars(Object.entries(p.scores).map(([label, score]) => ({ label, score })), "result"));
    } catch (err) { out.replaceChildren(errorBox(err)); }
  }
  root.append(el("form", { class: "try", onsubmit: run }, el("label", { for: "text-input" }, "Text"), input,
    el("div", { class: "row" }, el("button", { type: "submit", "data-testid": "submit" }, "Classify"))), out, curl);
};

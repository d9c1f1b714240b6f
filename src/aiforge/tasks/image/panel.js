/* Try-it panel of image-classification: upload or drop an image -> top-k labels with bars
   (multipart POST /v1/models/NAME/classify), and where the bundle's graph has the class-activation output,
   the map of the predicted label over the upload (multipart POST /v1/models/NAME/explain). */
"use strict";
window.aiforge.panels["image-classification"] = function (root, ctx) {
  const { el, api, bars, curlBox, errorBox } = window.aiforge;
  const path = "/v1/models/" + encodeURIComponent(ctx.name) + "/classify";
  const topK = Math.min(5, (ctx.info.describe.labels || []).length || 5);
  const file = el("input", { type: "file", accept: "image/*", "data-testid": "file", id: "image-file" });
  const explainPath = "/v1/models/" + encodeURIComponent(ctx.name) + "/explain";
  const explains = Boolean((ctx.info.examples || {}).explains);
  const preview = el("img", { alt: "the image sent", "data-testid": "preview" });
  const heat = el("img", { class: "cam", alt: "class-activation map", "data-testid": "cam", hidden: true });
  const show = el("input", { type: "checkbox", id: "cam-toggle", checked: true, "data-testid": "cam-toggle" });
  show.addEventListener("change", () => { heat.hidden = !show.checked || !heat.src; });
  const wrap = el("div", { class: "cam-wrap", hidden: true }, preview, heat);
  const camNote = el("div", { "data-testid": "cam-note" });
  const out = el("div", { "data-testid": "output", class: "image-result" });
  const curl = el("div", {});
  async function send(blob, filename) {
    preview.src = URL.createObjectURL(blob); wrap.hidden = false; heat.hidden = true; heat.removeAttribute("src");
    const form = new FormData();
    form.append("files", blob, filename);
    form.append("top_k", String(topK));
    curl.replaceChildren(curlBox("POST", path, undefined, ["files=@" + filename, "top_k=" + topK]));
    try {
      const p = (await api.postForm(path, form)).predictions[0];
      out.replaceChildren(el("p", {}, "Label: ", el("strong", { "data-testid": "label" }, p.label)), bars(p.top, "result"));
    } catch (err) { out.replaceChildren(errorBox(err)); return; }
    if (!explains) { camNote.replaceChildren(el("p", {}, "This bundle's graph has no class-activation output.")); return; }
    const form2 = new FormData();
    form2.append("files", blob, filename);
    try {
      const x = (await api.postForm(explainPath, form2)).explanations[0];
      heat.src = x.png; heat.hidden = !show.checked;
      heat.dataset.grid = x.grid.join("x"); heat.dataset.label = x.explained;
      camNote.replaceChildren(el("p", {}, el("label", { for: "cam-toggle" }, show, " class-activation map of "),
        el("strong", {}, x.explained), " (" + x.grid[0] + "×" + x.grid[1] + " cells; red: where the evidence lies)"),
        curlBox("POST", explainPath, undefined, ["files=@" + filename]));
    } catch (err) { camNote.replaceChildren(errorBox(err)); }
  }
  file.addEventListener("change", () => { if (file.files[0]) send(file.files[0], file.files[0].name); });
  const drop = el("div", { class: "drop", "data-testid": "drop" }, "Drop an image here, or ", el("label", { for: "image-file" }, "choose a file: "), file);
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault(); drop.classList.remove("over");
    const f = e.dataTransfer.files[0];
    if (f) send(f, f.name);
  });
  root.append(el("div", { class: "try" }, drop, el("div", { class: "row" }, wrap, out)), curl, camNote);
};

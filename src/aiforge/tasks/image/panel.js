/* Try-it panel of image-classification: upload or drop an image -> top-k labels with bars
   (multipart POST /v1/models/NAME/classify). Grad-CAM maps, where the bundle has them, are in its report below. */
"use strict";
window.aiforge.panels["image-classification"] = function (root, ctx) {
  const { el, api, bars, curlBox, errorBox } = window.aiforge;
  const path = "/v1/models/" + encodeURIComponent(ctx.name) + "/classify";
  const topK = Math.min(5, (ctx.info.describe.labels || []).length || 5);
  const file = el("input", { type: "file", accept: "image/*", "data-testid": "file", id: "image-file" });
  const preview = el("img", { class: "preview", alt: "the image sent", hidden: true });
  const out = el("div", { "data-testid": "output", class: "image-result" });
  const curl = el("div", {});
  async function send(blob, filename) {
    preview.src = URL.createObjectURL(blob); preview.hidden = false;
    const form = new FormData();
    form.append("files", blob, filename);
    form.append("top_k", String(topK));
    curl.replaceChildren(curlBox("POST", path, undefined, ["files=@" + filename, "top_k=" + topK]));
    try {
      const p = (await api.postForm(path, form)).predictions[0];
      out.replaceChildren(el("p", {}, "Label: ", el("strong", { "data-testid": "label" }, p.label)), bars(p.top, "result"));
    } catch (err) { out.replaceChildren(errorBox(err)); }
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
  root.append(el("div", { class: "try" }, drop, el("div", { class: "row" }, preview, out)), curl);
};

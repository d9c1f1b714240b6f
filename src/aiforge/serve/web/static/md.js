/* A small Markdown renderer for model cards: headings, paragraphs, lists, tables, code, **bold**, `code`.
   It builds DOM nodes with text only, so a card cannot inject markup or script. */
"use strict";
(function () {
  const { el } = window.aiforge;

  function inline(text) {
    const out = [];
    const re = /(\*\*[^*]+\*\*|`[^`]+`)/g;
    let last = 0, m;
    while ((m = re.exec(text))) {
      if (m.index > last) out.push(text.slice(last, m.index));
      const t = m[0];
      out.push(t.startsWith("**") ? el("strong", {}, t.slice(2, -2)) : el("code", {}, t.slice(1, -1)));
      last = m.index + t.length;
    }
    if (last < text.length) out.push(text.slice(last));
    return out;
  }
  const cells = (line) => line.trim().replace(/^\|/, "").replace(/\|$/, "").split("|").map((c) => c.trim());

  function render(source) {
    const root = el("div", { class: "markdown" });
    let lines = source.replace(/\r\n/g, "\n").split("\n");
    if (lines[0] === "---") {  // front matter: shown as the metadata block it is
      const end = lines.indexOf("---", 1);
      if (end > 0) { root.append(el("pre", { class: "front-matter" }, lines.slice(1, end).join("\n"))); lines = lines.slice(end + 1); }
    }
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      if (!line.trim()) { i++; continue; }
      if (line.startsWith("```")) {
        const body = []; i++;
        while (i < lines.length && !lines[i].startsWith("```")) body.push(lines[i++]);
        i++; root.append(el("pre", {}, el("code", {}, body.join("\n")))); continue;
      }
      const h = /^(#{1,6})\s+(.*)$/.exec(line);
      if (h) { root.append(el("h" + Math.min(6, h[1].length + 1), {}, inline(h[2]))); i++; continue; }
      if (line.trim().startsWith("|") && i + 1 < lines.length && /^\s*\|?\s*:?-{3,}/.test(lines[i + 1])) {
        const head = cells(line); i += 2;
        const rows = [];
        while (i < lines.length && lines[i].trim().startsWith("|")) rows.push(cells(lines[i++]));
        root.append(el("table", {}, el("thead", {}, el("tr", {}, head.map((c) => el("th", {}, inline(c))))),
          el("tbody", {}, rows.map((r) => el("tr", {}, r.map((c) => el("td", {}, inline(c))))))));
        continue;
      }
      if (/^\s*([-*]|\d+\.)\s+/.test(line)) {
        const ordered = /^\s*\d+\./.test(line);
        const list = el(ordered ? "ol" : "ul", {});
        while (i < lines.length && /^\s*([-*]|\d+\.)\s+/.test(lines[i])) {
          let item = lines[i++].replace(/^\s*([-*]|\d+\.)\s+/, "");
          while (i < lines.length && /^\s{2,}\S/.test(lines[i]) && !/^\s*([-*]|\d+\.)\s+/.test(lines[i])) item += " " + lines[i++].trim();
          list.append(el("li", {}, inline(item)));
        }
        root.append(list); continue;
      }
      const para = [];
      while (i < lines.length && lines[i].trim() && !/^(#{1,6}\s|```|\s*([-*]|\d+\.)\s+|\s*\|)/.test(lines[i])) para.push(lines[i++]);
      if (!para.length) para.push(lines[i++]);
      root.append(el("p", {}, inline(para.join(" "))));
    }
    return root;
  }
  window.aiforge.markdown = render;
})();

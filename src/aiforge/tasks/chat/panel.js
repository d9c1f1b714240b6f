/* Try-it panel of chat: a conversation streamed token by token (POST /v1/chat/completions, stream: true) in a
   server-side session (POST /v1/chat/sessions); citations link to the cited passage; "I don't know" shown as such. */
"use strict";
window.aiforge.panels["chat"] = function (root, ctx) {
  const { el, api, fmt, curlBox, errorBox } = window.aiforge;
  const path = "/v1/chat/completions";
  let session = null, turn = 0;
  const log = el("div", { class: "chat-log", "data-testid": "log", "aria-live": "polite" });
  const input = el("input", { type: "text", id: "chat-input", "data-testid": "input", placeholder: "Ask about the documents…", style: "flex:1" });
  const status = el("span", { "data-testid": "session" });
  const curl = el("div", {});
  async function newSession() {
    if (session) { try { await fetch("/v1/chat/sessions/" + encodeURIComponent(session), { method: "DELETE", headers: api.key() ? { Authorization: "Bearer " + api.key() } : {} }); } catch (e) { /* gone already */ } }
    const s = await api.post("/v1/chat/sessions", { model: ctx.name });
    session = s.id;
    status.textContent = "session " + session;
    log.replaceChildren();
  }
  function answerNodes(text, prefix) {  // "[n]" in the answer becomes a link to citation n
    const parts = [];
    let last = 0, m;
    const re = /\[(\d+)\]/g;
    while ((m = re.exec(text))) {
      if (m.index > last) parts.push(text.slice(last, m.index));
      parts.push(el("a", { href: "#" + prefix + m[1], class: "cite" }, m[0]));
      last = m.index + m[0].length;
    }
    parts.push(text.slice(last));
    return parts;
  }
  async function send(e) {
    e.preventDefault();
    const question = input.value.trim();
    if (!question) return;
    input.value = "";
    if (!session) await newSession();
    turn += 1;
    const prefix = "cite-" + turn + "-";
    log.append(el("div", { class: "msg user" }, question));
    const body_ = el("span", { class: "answer" });
    const msg = el("div", { class: "msg assistant", "data-testid": "answer", "data-chunks": "0", "data-done": "false" }, body_);
    log.append(msg);
    const body = { model: ctx.name, messages: [{ role: "user", content: question }], stream: true, session_id: session };
    curl.replaceChildren(curlBox("POST", path, body));
    let text = "", chunks = 0;
    try {
      await api.stream(path, body, (event) => {
        if (event.error) throw new Error(event.error.message);
        const choice = event.choices[0];
        if (choice.delta && choice.delta.content) {
          text += choice.delta.content; chunks += 1;
          body_.textContent = text;
          msg.dataset.chunks = String(chunks);
        }
        if (choice.finish_reason) {
          body_.replaceChildren(...answerNodes(text, prefix));
          const meta = event.aiforge || {};
          if (meta.kind === "dont_know") { msg.classList.add("dont-know"); msg.prepend(el("span", { class: "badge", "data-testid": "dont-know" }, "I don't know")); }
          const cites = event.citations || [];
          if (cites.length) msg.append(el("ol", { class: "citations", "data-testid": "citations" }, cites.map((c) =>
            el("li", { id: prefix + c.id, value: c.id },
              el("a", { href: "#" + prefix + c.id }, c.source + (c.heading ? " › " + c.heading : "")),
              " (chars " + c.start + "–" + c.end + ", score " + fmt(c.score) + ")",
              el("div", { class: "passage", "data-testid": "passage" }, c.snippet)))));
          msg.append(el("div", { class: "passage" }, (meta.kind || "") + (meta.intent ? " · intent " + meta.intent : "")));
        }
      });
    } catch (err) { msg.append(errorBox(err)); }
    msg.dataset.done = "true";
  }
  root.append(el("div", { class: "try" },
    el("div", { class: "row" }, el("button", { type: "button", class: "secondary", "data-testid": "new-session", onclick: () => newSession().catch((err) => log.append(errorBox(err))) }, "New session"), status),
    log,
    el("form", { class: "row", onsubmit: send }, input, el("button", { type: "submit", "data-testid": "submit" }, "Send"))), curl);
};

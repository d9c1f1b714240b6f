/* Try-it panel of driving: the episode replay (the bundle's replay.gif and its recorded steps), the shield's
   interventions, and an observation (a recorded step or an example, editable JSON) posted to
   POST /v1/models/NAME/act -> the action and whether the shield overrode the policy. */
"use strict";
window.aiforge.panels["driving"] = function (root, ctx) {
  const { el, api, bars, curlBox, errorBox, table } = window.aiforge;
  const ex = ctx.info.examples || {};
  const base = "/v1/ui/models/" + encodeURIComponent(ctx.name) + "/files/";
  const path = "/v1/models/" + encodeURIComponent(ctx.name) + "/act";
  const choices = (ex.examples || []).map((e) => ({ name: e.name, body: e.body }));
  const picker = el("select", { "data-testid": "example", id: "drive-example" });
  const body = el("textarea", { id: "drive-body", "data-testid": "input", rows: 8, spellcheck: "false", class: "json" });
  const out = el("div", { "data-testid": "output" });
  const curl = el("div", {});

  function fillPicker() {
    picker.replaceChildren(...choices.map((c, i) => el("option", { value: String(i) }, c.name)));
    if (choices.length) body.value = JSON.stringify(choices[0].body);
  }
  picker.addEventListener("change", () => { body.value = JSON.stringify(choices[Number(picker.value)].body); });

  async function run(e) {
    e.preventDefault();
    let sent;
    try { sent = JSON.parse(body.value); } catch (err) { out.replaceChildren(errorBox("the body is not JSON: " + err.message)); return; }
    curl.replaceChildren(curlBox("POST", path, sent));
    try {
      const a = (await api.post(path, sent)).actions[0];
      out.replaceChildren(
        el("p", {}, "Action: ", el("strong", { "data-testid": "action" }, a.action),
          " (policy proposed ", el("span", { "data-testid": "proposed" }, a.proposed), ")"),
        el("p", { class: a.shield_overrode ? "fail" : "pass" }, "Shield overrode: ",
          el("strong", { "data-testid": "overrode" }, a.shield_overrode ? "yes" : "no"),
          a.shield_rule ? " — " + a.shield_rule : "", a.shield_checked ? "" : " (no radar rows: the shield did not check)"),
        bars(Object.entries(a.probabilities).map(([label, score]) => ({ label, score })), "result"));
    } catch (err) { out.replaceChildren(errorBox(err)); }
  }

  const replay = el("div", { class: "replay", "data-testid": "replay" });
  const steps = el("div", { "data-testid": "replay-steps" });
  async function showReplay() {
    if (ex.replay_gif) {
      try {
        replay.append(el("img", { src: await api.blobUrl(base + encodeURIComponent(ex.replay_gif)), alt: "episode replay",
                                  "data-testid": "replay-gif", class: "replay-gif" }));
      } catch (err) { replay.append(errorBox(err)); }
    } else replay.append(el("p", {}, "This bundle has no replay recorded."));
    if (!ex.replay_json) return;
    try {
      const rec = await api.get(base + encodeURIComponent(ex.replay_json));
      const rows = rec.steps.map((s) => el("tr", { "data-step": String(s.step), class: s.shield_overrode ? "overridden" : "" },
        el("td", {}, "t=" + s.step + " s"), el("td", {}, s.action),
        el("td", { class: s.shield_overrode ? "fail" : "" }, s.shield_overrode ? "yes" : "no"),
        el("td", {}, el("button", { type: "button", "data-testid": "use-step", onclick: () => {
          picker.value = String(choices.findIndex((c) => c.step === s.step));
          body.value = JSON.stringify(choices[Number(picker.value)].body);
          body.scrollIntoView({ block: "center" });
        } }, "try this step"))));
      steps.replaceChildren(el("p", {}, "Seed " + rec.seed + ", " + rec.episode_steps + " steps" + (rec.crashed ? ", crashed" : "") +
          "; the shield overrode the policy at " + (rec.overridden_steps.length ? "steps " + rec.overridden_steps.join(", ") : "no step") + "."),
        el("table", { "data-testid": "step-table" }, el("thead", {}, el("tr", {}, ["step", "action taken", "shield overrode", ""].map((c) => el("th", {}, c)))),
          el("tbody", {}, rows)));
      for (const s of rec.steps) choices.push({ name: "recorded step t=" + s.step + " s (seed " + rec.seed + ")", step: s.step,
                                                body: { observation: s.observation, radar: s.radar } });
      const keep = picker.value;
      fillPicker();
      picker.value = keep || "0";
      body.value = JSON.stringify(choices[Number(picker.value)].body);
    } catch (err) { steps.append(errorBox(err)); }
  }

  const interventions = (ex.interventions || []).length
    ? table(ex.interventions.map((r) => Object.assign({}, r, { overridden_steps: r.overridden_steps.join(", ") || "none" })),
        ["policy", "seed", "steps", "crashed", "overrides", "overridden_steps"], "interventions")
    : el("p", {}, "No shielded episode in the bundle's evaluation.");
  fillPicker();
  root.append(
    el("h3", {}, "Episode replay (red frames: the shield overrode the policy)"), el("div", { class: "row" }, replay, steps),
    el("h3", {}, "Shield interventions in the evaluation"), interventions,
    el("h3", {}, "Act on an observation"),
    el("form", { class: "try", onsubmit: run },
      el("label", { for: "drive-example" }, "Observation"), picker,
      el("label", { for: "drive-body" }, "Request body (editable JSON: observation of shape [" + ex.shape.join(", ") + "], optional radar rows)"), body,
      el("div", { class: "row" }, el("button", { type: "submit", "data-testid": "submit" }, "Act"))), out, curl);
  showReplay();
};

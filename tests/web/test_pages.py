"""The web pages in a real browser (Debian's Chromium via Playwright) against a real ``aiforge serve``.

For each kind: open the model page, fill its try-it panel, and check that what the page shows is what
the JSON route answers for the same input. Every page runs with the network cut to the server (the
``opened`` fixture fails a test on any other request or any script error) and is screenshotted.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, expect
from web_helpers import INJECTED_CATEGORY, INJECTED_LABEL, INJECTED_SOURCE, Opened, Site, call, open_page

pytestmark = pytest.mark.slow
ITEMS = "rows => rows.map(r => r.dataset.item)"


def _bars(opened: Opened, testid: str = "result") -> list[tuple[str, float]]:
    rows = opened.page.locator(f"[data-testid={testid}] li")
    labels = rows.locator(".bar-label").all_text_contents()
    scores = [float(s) for s in rows.locator(".bar-score").all_text_contents()]
    return list(zip(labels, scores, strict=True))


def _sent(opened: Opened, path: str) -> bytes:
    """The body of the last POST the page sent to ``path``."""
    bodies = [body for url, body in opened.posts if url.endswith(path)]
    assert bodies, f"the page sent no POST to {path}: {[u for u, _ in opened.posts]}"
    return bodies[-1] or b""


def test_home_lists_every_model_and_refreshes_live_numbers(opened: Opened, site: Site, shots: Path) -> None:
    opened.goto("/")
    listing = call(site.origin + "/v1/ui/models")[1]
    rows = opened.page.locator("[data-testid=models] tbody tr")
    expect(rows).to_have_count(len(site.names))
    for model in listing["models"]:
        cells = opened.page.locator(f"tr[data-model='{model['name']}'] td").all_text_contents()
        assert cells[:4] == [model["name"], model["task"], model["version"], model["stage"]], cells
        assert cells[6] == model["precision"]
    assert {m["task"] for m in listing["models"]} == {"text-classification", "tabular-classification",
                                                      "image-classification", "recommendation", "chat", "driving"}
    shipped = opened.page.locator(f"tr[data-model='{site.names['injected']}'] .stage")
    expect(shipped).to_have_text("production")
    # traffic from a client shows up without a reload
    updates = int(opened.page.evaluate("document.body.dataset.liveUpdates || 0"))
    url = f"{site.origin}/v1/models/{site.names['injected']}/predict"
    for _ in range(30):
        assert call(url, {"inputs": [{"amount": 5.0, "colour": "red", "group": "a"}]})[0] == 200
    expect(opened.page.locator("[data-testid=rps]")).not_to_have_text(re.compile(r"^(–|0\.00)$"), timeout=10_000)
    expect(opened.page.locator("[data-testid=p50]")).to_have_text(re.compile(r"^\d+\.\d$"))
    assert int(opened.page.evaluate("document.body.dataset.liveUpdates")) > updates
    stats = call(site.origin + "/v1/ui/stats")[1]
    assert stats["requests"] >= 30 and stats["p99_ms"] >= stats["p50_ms"] > 0
    assert set(stats["queue_depth"]) == set(site.names.values())
    opened.shot(shots, "home")


def test_text_page_shows_the_top_five_labels_the_api_gives(opened: Opened, site: Site, shots: Path) -> None:
    name = site.names["text"]
    opened.goto(f"/ui/models/{name}")
    sentence = "I still have not received my new card, when will it arrive?"
    opened.page.fill("[data-testid=input]", sentence)
    opened.page.click("[data-testid=submit]")
    expect(opened.page.locator("[data-testid=result] li")).to_have_count(5)
    status, body = call(f"{site.origin}/v1/models/{name}/predict", {"inputs": [sentence], "top_k": 5})
    assert status == 200
    expected = [(label, round(score, 4)) for label, score in body["predictions"][0]["scores"].items()]
    assert _bars(opened) == expected
    assert opened.page.locator("[data-testid=label]").text_content() == body["predictions"][0]["label"]
    assert f"/v1/models/{name}/predict" in (opened.page.locator("[data-testid=curl]").text_content() or "")
    opened.shot(shots, "text")


def test_tabular_form_comes_from_the_schema_and_matches_the_api(opened: Opened, site: Site, shots: Path) -> None:
    name = site.names["tabular"]
    opened.goto(f"/ui/models/{name}")
    info = call(f"{site.origin}/v1/ui/models/{name}")[1]
    fields = info["examples"]["fields"]
    assert len(fields) == len(info["describe"]["input_schema"])
    assert opened.page.locator("[data-field]").count() == len(fields)
    purpose = next(f for f in fields if f["name"] == "purpose")
    assert opened.page.locator("select[data-field=purpose] option").all_text_contents() == purpose["allowed"]
    opened.page.select_option("select[data-field=purpose]", "car (new)")
    opened.page.fill("input[data-field=duration]", "36")
    opened.page.click("[data-testid=submit]")
    expect(opened.page.locator("[data-testid=label]")).not_to_be_empty()
    sent = json.loads(_sent(opened, "/predict"))
    assert sent["inputs"][0]["purpose"] == "car (new)" and sent["inputs"][0]["duration"] == 36
    prediction = call(f"{site.origin}/v1/models/{name}/predict", sent)[1]["predictions"][0]
    assert opened.page.locator("[data-testid=label]").text_content() == prediction["label"]
    assert opened.page.locator("[data-testid=score]").text_content() == f"{prediction['score']:.4f}"
    # transparency: the per-group audit, the manifest and the data's licence
    expect(opened.page.locator("[data-testid='fair-age_group'] tbody tr")).to_have_count(2)
    assert opened.page.locator("[data-testid=files] tbody tr").count() == len(info["manifest"]["files"])
    assert "CC BY 4.0" in (opened.page.locator("[data-testid=provenance]").text_content() or "")
    expect(opened.page.frame_locator("[data-testid=report-frame]").locator("img").first).to_be_visible()
    opened.shot(shots, "tabular")


def test_image_upload_shows_the_top_k_the_api_gives(opened: Opened, site: Site, shots: Path) -> None:
    from vision_helpers import fashion_folders

    name = site.names["image"]
    picture = next(p for p in sorted((fashion_folders() / "test").rglob("*")) if p.is_file())
    opened.goto(f"/ui/models/{name}")
    opened.page.set_input_files("[data-testid=file]", str(picture))
    expect(opened.page.locator("[data-testid=result] li").first).to_be_visible()
    boundary = "aiforgeweb"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{picture.name}\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + picture.read_bytes() + (
            f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"top_k\"\r\n\r\n4\r\n"
            f"--{boundary}--\r\n").encode()
    status, answer = call(f"{site.origin}/v1/models/{name}/classify", data=body,
                          headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 200, answer
    expected = [(t["label"], round(t["score"], 4)) for t in answer["predictions"][0]["top"]]
    assert _bars(opened) == expected
    expect(opened.page.locator("[data-testid=label]")).to_have_text(answer["predictions"][0]["label"])
    # the class-activation map of the predicted label, over the upload: what POST .../explain answers
    cam = opened.page.locator("[data-testid=cam]")
    expect(cam).to_be_visible()
    explain_body = body.replace(b'name="top_k"\r\n\r\n4', b'name="label"\r\n\r\n')
    status, explained = call(f"{site.origin}/v1/models/{name}/explain", data=explain_body,
                             headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 200, explained
    x = explained["explanations"][0]
    assert x["explained"] == answer["predictions"][0]["label"] and x["image"] == picture.name
    assert cam.get_attribute("src") == x["png"] and cam.get_attribute("data-grid") == "x".join(map(str, x["grid"]))
    box, under = cam.bounding_box(), opened.page.locator("[data-testid=preview]").bounding_box()
    assert box and under and abs(box["width"] - under["width"]) < 1 and abs(box["height"] - under["height"]) < 1
    schema = call(f"{site.origin}/openapi.json")[1]
    ok = schema["paths"]["/v1/models/{name}/explain"]["post"]["responses"]["200"]["content"]["application/json"]
    assert ok["schema"]["$ref"].endswith("/ExplainResponse")
    report = opened.page.frame_locator("[data-testid=report-frame]")  # the mistakes and Grad-CAM maps
    expect(report.locator("img").first).to_be_visible()
    assert report.locator("img").count() >= 4
    opened.shot(shots, "image")


def test_recommend_page_ranks_what_the_api_ranks(opened: Opened, site: Site, shots: Path) -> None:
    name = site.names["recommend"]
    opened.goto(f"/ui/models/{name}")
    info = call(f"{site.origin}/v1/ui/models/{name}")[1]
    user = info["examples"]["users"][1]
    opened.page.select_option("[data-testid=user]", user)
    opened.page.click("[data-testid=submit]")
    expect(opened.page.locator("[data-testid=result] tbody tr")).to_have_count(10)
    api = call(f"{site.origin}/v1/models/{name}/recommend", {"k": 10, "user": user})[1]
    shown = opened.page.locator("[data-testid=result] tbody tr").evaluate_all(ITEMS)
    assert shown == [r["item"] for r in api["recommendations"]]
    title = api["recommendations"][0]["metadata"].get("title")
    if title is not None:  # item metadata is shown beside each item
        assert title in (opened.page.locator("[data-testid=result] tbody tr").first.text_content() or "")
    item = info["examples"]["items"][0]["item"]
    opened.page.select_option("[data-testid=similar-item]", item)
    opened.page.click("[data-testid=similar]")
    expect(opened.page.locator("[data-testid=similar-result] tbody tr").first).to_be_visible()
    similar = call(f"{site.origin}/v1/models/{name}/similar", {"item": item, "k": 10})[1]
    shown = opened.page.locator("[data-testid=similar-result] tbody tr").evaluate_all(ITEMS)
    assert shown == [r["item"] for r in similar["similar"]]
    opened.shot(shots, "recommend")


def _ask(opened: Opened, question: str, turn: int) -> Any:
    opened.page.fill("[data-testid=input]", question)
    opened.page.click("[data-testid=submit]")
    answer = opened.page.locator("[data-testid=answer]").nth(turn)
    expect(answer).to_have_attribute("data-done", "true", timeout=30_000)
    return answer


def test_chat_streams_cites_says_it_does_not_know_and_shows_script_as_text(opened: Opened, site: Site,
                                                                           shots: Path) -> None:
    name = site.names["chat"]
    opened.goto(f"/ui/models/{name}")
    question = "How fast does the Lyon warehouse ship hardware keys?"
    answer = _ask(opened, question, 0)
    assert int(answer.get_attribute("data-chunks") or 0) >= 2, "the answer did not stream in pieces"
    api = call(f"{site.origin}/v1/chat/completions", {"model": name, "messages": [{"role": "user",
                                                                                   "content": question}]})[1]
    assert answer.locator(".answer").text_content() == api["choices"][0]["message"]["content"]
    citations = answer.locator("[data-testid=citations] li")
    expect(citations).to_have_count(len(api["citations"]))
    snippets = answer.locator("[data-testid=passage]").all_text_contents()
    assert snippets == [c["snippet"] for c in api["citations"]]
    assert any("window.__pwned=2" in s for s in snippets), snippets  # the server stripped the tags; text remains
    sources = answer.locator("[data-testid=citations] li > a").all_text_contents()
    assert any(INJECTED_SOURCE in s for s in sources), sources  # the file name's markup is shown as text
    assert answer.locator("script, img").count() == 0
    link = answer.locator("a.cite").first
    link.click()
    assert opened.page.evaluate("location.hash") == link.get_attribute("href")
    dont = _ask(opened, "Who won the football world cup in 1998?", 1)
    expect(dont.locator("[data-testid=dont-know]")).to_have_text("I don't know")
    session = opened.page.locator("[data-testid=session]").text_content()
    opened.shot(shots, "chat")
    opened.page.click("[data-testid=new-session]")
    expect(opened.page.locator("[data-testid=session]")).not_to_have_text(session or "")
    expect(opened.page.locator("[data-testid=answer]")).to_have_count(0)
    assert opened.page.evaluate("window.__pwned") is None


def test_script_in_labels_categories_and_cards_is_shown_as_text(opened: Opened, site: Site, shots: Path) -> None:
    name = site.names["injected"]
    opened.goto(f"/ui/models/{name}")
    options = opened.page.locator("select[data-field=colour] option").all_text_contents()
    assert INJECTED_CATEGORY in options
    opened.page.select_option("select[data-field=colour]", INJECTED_CATEGORY)
    opened.page.fill("input[data-field=amount]", "0.5")
    opened.page.click("[data-testid=submit]")
    expect(opened.page.locator("[data-testid=result] li")).to_have_count(2)
    labels = [label for label, _ in _bars(opened)]
    assert sorted(labels) == sorted([INJECTED_LABEL, "approved"])
    assert INJECTED_LABEL in (opened.page.locator("[data-testid=card]").text_content() or "")
    assert opened.page.locator("main img, main script").count() == 0
    # the last ship: every gate listed with its verdict, and the stage it gave
    expect(opened.page.locator("[data-testid=ship-verdict]")).to_have_text("passed")
    expect(opened.page.locator("[data-testid=gate-table] tbody tr")).to_have_count(2)
    expect(opened.page.locator("[data-testid=stage]")).to_have_text("production")
    time.sleep(0.3)  # an onerror handler would have fired by now
    assert opened.page.evaluate("window.__pwned") is None
    opened.shot(shots, "injected")


def test_pages_ask_for_the_key_once_and_show_only_health_without_it(browser: Browser, keyed_site: tuple[str, str],
                                                                    shots: Path) -> None:
    origin, key = keyed_site
    page = open_page(browser, origin)
    try:
        page.goto("/")
        expect(page.page.locator("[data-testid=key-form]")).to_be_visible()
        expect(page.page.locator("[data-testid=health]")).to_contain_text("Server ready: true")
        assert page.page.locator("[data-testid=models]").count() == 0
        assert "inject-tab" not in (page.page.locator("main").text_content() or "")
        page.shot(shots, "keyed-home")
        page.page.fill("#api-key", key)
        page.page.click("[data-testid=key-form] button")
        expect(page.page.locator("[data-testid=models] tbody tr")).to_have_count(1)
        page.page.click("text=inject-tab")
        page.page.wait_for_selector("body[data-rendered='1']")
        expect(page.page.locator("[data-testid=key-form]")).to_have_count(0)  # asked once: the tab keeps it
        page.page.fill("input[data-field=amount]", "7")
        page.page.click("[data-testid=submit]")
        expect(page.page.locator("[data-testid=label]")).to_have_text("approved")
        auth = [r for r in page.requests if "/predict" in r]
        assert auth and not page.external()
        req = urllib.request.Request(origin + "/v1/ui/models")
        assert call(req.full_url)[0] == 401
    finally:
        page.context.close()


def test_driving_page_replays_the_episode_and_acts_as_the_api_does(opened: Opened, site: Site, shots: Path) -> None:
    name = site.names["driving"]
    opened.goto(f"/ui/models/{name}")
    info = call(f"{site.origin}/v1/ui/models/{name}")[1]
    replay = json.loads((site.paths["driving"] / "replay.json").read_text(encoding="utf-8"))
    # the replay GIF comes through the verified bundle-file route; the recorded steps list the shield's overrides
    gif = opened.page.locator("[data-testid=replay-gif]")
    expect(gif).to_be_visible()
    assert opened.page.evaluate("document.querySelector('[data-testid=replay-gif]').naturalWidth") == 600
    expect(opened.page.locator("[data-testid=step-table] tbody tr")).to_have_count(len(replay["steps"]))
    shown = opened.page.locator("[data-testid=step-table] tbody tr td:nth-child(3)").all_text_contents()
    assert shown == ["yes" if s["shield_overrode"] else "no" for s in replay["steps"]]
    episodes = [e for e in info["examples"]["interventions"] if e["policy"] == "aiforge+shield"]
    interventions = opened.page.locator("[data-testid=interventions] tbody tr")
    expect(interventions).to_have_count(len(info["examples"]["interventions"]))
    assert episodes and episodes[0]["overridden_steps"] == replay["overridden_steps"]
    # a recorded step, posted by the panel, answers what the JSON route answers for the same body
    opened.page.locator("[data-testid=use-step]").nth(1).click()
    opened.page.click("[data-testid=submit]")
    expect(opened.page.locator("[data-testid=action]")).not_to_be_empty()
    sent = json.loads(_sent(opened, "/act"))
    assert sent == {"observation": replay["steps"][1]["observation"], "radar": replay["steps"][1]["radar"]}
    status, api = call(f"{site.origin}/v1/models/{name}/act", sent)
    assert status == 200, api
    act = api["actions"][0]
    assert opened.page.locator("[data-testid=action]").text_content() == act["action"]
    assert opened.page.locator("[data-testid=overrode]").text_content() == ("yes" if act["shield_overrode"] else "no")
    assert _bars(opened) == [(k, round(v, 4)) for k, v in act["probabilities"].items()]
    # the constructed unsafe state: the shield brakes whatever the policy proposed
    opened.page.select_option("[data-testid=example]", "0")
    opened.page.click("[data-testid=submit]")
    expect(opened.page.locator("[data-testid=action]")).to_have_text("SLOWER")
    act = call(f"{site.origin}/v1/models/{name}/act", json.loads(_sent(opened, "/act")))[1]["actions"][0]
    expect(opened.page.locator("[data-testid=overrode]")).to_have_text("yes" if act["shield_overrode"] else "no")
    assert f"/v1/models/{name}/act" in (opened.page.locator("[data-testid=curl]").text_content() or "")
    # the report's replay, which the sandboxed frame could not load by name, is inlined (verified) as data:
    frame_gif = opened.page.frame_locator("[data-testid=report-frame]").locator("img").first
    expect(frame_gif).to_have_attribute("src", re.compile(r"^data:image/gif;base64,"))
    # the file route serves manifest-listed media only, verified
    assert call(f"{site.origin}/v1/ui/models/{name}/files/policy.onnx")[0] == 404
    assert call(f"{site.origin}/v1/ui/models/{name}/files/nothere.gif")[0] == 404
    opened.shot(shots, "driving")


def _plain_shot(page: Any, folder: Path, name: str) -> None:
    """A full-page screenshot of a page opened without :class:`Opened` (also into $AIFORGE_WEB_SHOTS)."""
    for where in [folder, *([Path(os.environ["AIFORGE_WEB_SHOTS"])] if os.environ.get("AIFORGE_WEB_SHOTS") else [])]:
        where.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(where / f"{name}.png"), full_page=True)


def _html(url: str) -> str:
    with urllib.request.urlopen(url, timeout=60) as resp:
        assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
        return str(resp.read().decode("utf-8"))


def test_pages_read_without_javascript_and_escape_what_they_render(browser: Browser, site: Site, shots: Path) -> None:
    context = browser.new_context(java_script_enabled=False, viewport={"width": 1200, "height": 900})
    page = context.new_page()
    try:
        page.goto(site.origin + "/")
        listing = call(site.origin + "/v1/ui/models")[1]
        rows = page.locator("[data-testid=models] tbody tr")
        expect(rows).to_have_count(len(listing["models"]))
        for model in listing["models"]:
            cells = page.locator(f"tr[data-model='{model['name']}'] td").all_text_contents()
            assert cells[:4] == [model["name"], model["task"], model["version"], model["stage"]], cells
            assert cells[6] == model["precision"] and cells[5].endswith("B")
        expect(page.locator("[data-testid=noscript]")).to_be_visible()
        _plain_shot(page, shots, "nojs-home")
        name = site.names["injected"]
        page.goto(f"{site.origin}/ui/models/{name}")
        info = call(f"{site.origin}/v1/ui/models/{name}")[1]
        expect(page.locator("[data-testid=summary] h1")).to_have_text(name)
        expect(page.locator("[data-testid=card]")).to_contain_text(INJECTED_LABEL)  # shown as text
        expect(page.locator("[data-testid=files] tbody tr")).to_have_count(len(info["manifest"]["files"]))
        expect(page.locator("[data-testid=ship-verdict]")).to_have_text("passed")
        expect(page.locator("[data-testid=gate-table] tbody tr")).to_have_count(len(info["ship"]["gates"]))
        expect(page.locator("[data-testid=headline]")).to_be_visible()
        assert page.locator("main img, main script").count() == 0
        _plain_shot(page, shots, "nojs-injected")
        tabular = site.names["tabular"]
        page.goto(f"{site.origin}/ui/models/{tabular}")
        expect(page.locator("[data-testid='fair-age_group'] tbody tr")).to_have_count(2)
        baseline = call(f"{site.origin}/v1/ui/models/{tabular}")[1]["baseline"]
        if baseline is not None and not baseline["skipped"]:
            expect(page.locator("[data-testid=baseline-table]")).to_contain_text(str(baseline["best"]))
            expect(page.locator("[data-testid=baseline-diff]")).to_contain_text(f"{baseline['difference']:+.4f}")
    finally:
        context.close()
    # the markup the server sent: the injected label and category only ever appear escaped
    raw = _html(f"{site.origin}/ui/models/{name}")
    assert INJECTED_LABEL not in raw and "&lt;img src=x onerror=&quot;window.__pwned=1&quot;&gt;" in raw
    assert INJECTED_CATEGORY not in raw
    home = _html(site.origin + "/")
    assert home.count("<tr data-model=") == len(site.names)
    missing = _html(site.origin + "/ui/models/%3Cscript%3Ex")
    assert "<script>x" not in missing and "&lt;script&gt;x" in missing

"""Reranking, calibrated abstention, definition-aware ingestion, focused answers and QA evaluation.

The reranked bundle indexes two real pages of an installed package's reference documentation
(pygame-ce's Sphinx HTML, found through ``knowledge.packages``), so definitions, signatures and
navigation are as a real corpus has them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from chat_helpers import build_bundle

from aiforge.app import load
from aiforge.audit.checks import evaluate_bundle
from aiforge.errors import DataError
from aiforge.hub.catalog import get_backbone
from aiforge.hub.reranker import CrossEncoder
from aiforge.tasks.chat.data import extract_text
from aiforge.tasks.chat.qa import read_qa
from aiforge.tasks.chat.rerank import choose_threshold
from aiforge.tasks.chat.runtime import DONT_KNOW

SPHINX_HTML = """<html><body><div class="header"><h5>library docs</h5> Home || Reference Index</div>
<div class="body" role="main"><section id="clock"><dl class="definition"><dt class="title module" id="lib.clock">
<code>lib.clock</code><a class="headerlink" href="#lib.clock">¶</a></dt>
<dd><table class="toc"><tr><td>lib.clock.ticks — milliseconds since start</td></tr></table>
<p>Tools to measure time.</p>
<dl class="py function definition"><dt class="sig sig-object py title" id="lib.clock.ticks">
<span class="sig-name descname">ticks</span>()<a class="headerlink" href="#lib.clock.ticks">¶</a></dt>
<dd><div class="line-block"><div class="line"><span class="summaryline">Get the time in milliseconds.</span></div>
<div class="line"><span class="signature">ticks() -&gt; int</span></div></div>
<p>Return the number of milliseconds since the library was started.</p></dd></dl>
</dd></dl></section></div><div class="footer">Edit on GitHub</div></body></html>
"""


def test_sphinx_definitions_become_sections_without_navigation(tmp_path: Path) -> None:
    page = tmp_path / "clock.html"
    page.write_text(SPHINX_HTML, encoding="utf-8")
    text, sections = extract_text(page)
    assert "Reference Index" not in text and "Edit on GitHub" not in text  # outside role="main"
    assert "¶" not in text and "milliseconds since start" not in text  # header links and summary tables
    by_heading = {s.heading: s for s in sections}
    ticks = by_heading["lib.clock > lib.clock.ticks"]
    assert ticks.definition == "lib.clock.ticks: ticks() -> int"
    assert "Return the number of milliseconds" in text[ticks.start:ticks.end]


def test_markdown_and_rst_definitions(tmp_path: Path) -> None:
    md = tmp_path / "api.md"
    md.write_text("# API\n\nIntro.\n\n## `move_ip(x, y)`\n\nMoves the rectangle in place.\n\n## Notes\n\nPlain.\n",
                  encoding="utf-8")
    rst = tmp_path / "io.rst"
    rst.write_text("IO\n==\n\n.. function:: load(path, *, strict=False)\n\n   Load a file.\n", encoding="utf-8")
    md_sections = {s.heading: s.definition for s in extract_text(md)[1]}
    assert md_sections["API > `move_ip(x, y)`"] == "move_ip(x, y)"
    assert md_sections["API > Notes"] is None
    rst_sections = {s.heading: s.definition for s in extract_text(rst)[1]}
    assert rst_sections["IO > load"] == "load(path, *, strict=False)"


def test_cross_encoder_ranks_the_answer_first_and_batches_consistently() -> None:
    folder = get_backbone("ms-marco-minilm-l12").path()
    ce = CrossEncoder(folder / "model.onnx", folder / "tokenizer.json", max_length=128, batch_size=2)
    passages = ["The free plan includes 15 GB of storage.", "Invoices are sent on the first day of each month.",
                "Refunds are issued within 14 days.", "Paris is the capital of France."]
    scores = ce.score("How much storage does the free plan include?", passages)
    assert int(np.argmax(scores)) == 0 and scores[0] > 0 > scores[3]
    one_by_one = np.array([ce.score("How much storage does the free plan include?", [p])[0] for p in passages])
    # padding is masked out; what moves is int8 dynamic quantization, whose activation scales are per batch
    # (measured: 0.07 of a logit, where relevant and irrelevant passages are ~10 apart)
    assert np.abs(one_by_one - scores).max() < 0.25
    assert (np.argsort(-one_by_one) == np.argsort(-scores)).all()


@pytest.fixture(scope="module")
def pygame_docs(chat_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pygame-docs")
    raw = {"name": "pygame-docs", "task": "chat",
           "knowledge": {"packages": ["pygame/docs/generated/ref"], "include": ["time.html", "mouse.html"]},
           "retrieval": {"rerank": {"calibration_questions": 8, "candidates": 6,
                                    "unanswerable": ["How do I bake sourdough bread?"]}}}
    mp = pytest.MonkeyPatch()
    mp.setenv("AIFORGE_CACHE", str(chat_cache))
    try:
        result = build_bundle(raw, root / "home", root / "spec")
    finally:
        mp.undo()
    return Path(result.exported.path)


def test_reranked_answer_names_the_function_first_and_cites_its_page(pygame_docs: Path) -> None:
    rt = load(pygame_docs)
    turn = rt.ask("Which function returns the number of milliseconds since pygame.init() was called?")
    assert turn.kind == "retrieval", turn.text
    assert turn.text.startswith("pygame.time.get_ticks: get_ticks() -> int [1]"), turn.text
    assert "milliseconds since pygame.init()" in turn.text
    assert turn.citations[0]["source"] == "ref/time.html"
    assert turn.citations[0]["relevance"] >= rt.pipeline["rerank"]["threshold"]
    # one citation per sentence: the definition and each sentence after it end with [n]
    assert len(re.findall(r" \[\d\] ?", turn.text)) >= 2 and turn.text.endswith("]")


def test_out_of_domain_question_is_refused_by_the_calibrated_threshold(pygame_docs: Path) -> None:
    rt = load(pygame_docs)
    turn = rt.ask("What is the capital of Peru?")
    assert (turn.kind, turn.text, turn.citations) == ("dont_know", DONT_KNOW, [])
    rt.use_reranker(False)  # the same bundle without its second stage: cosine threshold, no relevance logits
    assert rt.reranker is None and all(c.get("relevance") is None
                                       for c in rt.ask("How do I hide the mouse cursor?").citations)


def test_threshold_and_trade_off_are_recorded_in_bundle_and_card(pygame_docs: Path) -> None:
    pipeline = json.loads((pygame_docs / "pipeline.json").read_text(encoding="utf-8"))
    metrics = json.loads((pygame_docs / "metrics.json").read_text(encoding="utf-8"))
    card = (pygame_docs / "card.md").read_text(encoding="utf-8")
    a = metrics["abstention"]
    assert pipeline["rerank"]["threshold"] == a["threshold"]
    assert a["questions"] == {"generated_answerable": 8, "generated_out_of_domain": 8, "user_unanswerable": 1,
                              "generated_close_domain": 8}
    assert a["unanswerable_refused"] >= 0.8 and a["answerable_answered"] >= 0.8
    answered = [p["answerable_answered"] for p in a["curve"]]
    assert answered == sorted(answered, reverse=True)  # a higher threshold never answers more
    assert f"{a['threshold']:.2f}" in card and "reranker" in card
    # the sentence stage: its threshold in the bundle, its trade-off (both stages together) in metrics and card
    assert pipeline["rerank"]["sentence_threshold"] == a["sentence_threshold"]
    assert a["unanswerable_refused"] >= a["passage_only"]["unanswerable_refused"]
    assert a["answerable_answered"] <= a["passage_only"]["answerable_answered"]
    assert set(a["unanswerable_refused_by_kind"]) == {"out_of_domain", "user", "close_generated"}
    sentence_answered = [p["answerable_answered"] for p in a["sentence_curve"]]
    assert sentence_answered == sorted(sentence_answered, reverse=True)
    assert f"{a['sentence_threshold']:.2f}" in card and "left out of the index" in card
    assert (pygame_docs / "reranker.onnx").is_file()


def test_eval_scores_a_qa_file(pygame_docs: Path, tmp_path: Path) -> None:
    qa = tmp_path / "qa.jsonl"
    rows = [{"question": "How do I hide the mouse cursor?", "gold_source": "ref/mouse.html",
             "answer_contains": "set_visible"},
            {"question": "How do I pause the program for a number of milliseconds?", "gold_source": "ref/time.html",
             "answer_contains": ["wait", "delay"]},
            {"question": "Who wrote the novel Pride and Prejudice?", "unanswerable": True, "kind": "out_of_domain",
             "split": "heldout"}]
    qa.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    report = evaluate_bundle(pygame_docs, qa)  # what `aiforge eval BUNDLE --data qa.jsonl` runs
    m = report.metrics
    assert (m["answerable"], m["unanswerable"]) == (2, 1)
    assert m["gold_cited"] == 1.0 and m["answer_contains"] == 1.0, m["rows"]
    assert m["unanswerable_refused"] == 1.0 and m["refusal_precision"] == 1.0
    assert m["refused_by_kind"] == {"out_of_domain": 1.0} and m["latency_ms_p50"] > 0
    assert set(m["by_split"]) == {"heldout", "unsplit"}
    assert (m["by_split"]["heldout"]["unanswerable"], m["by_split"]["unsplit"]["answerable"]) == (1, 2)


def test_choose_threshold_keeps_the_answered_target_and_refuses_what_it_can() -> None:
    answerable = np.array([-np.inf, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])  # -inf: refused earlier
    unanswerable = np.array([-np.inf, -5.0, 0.5, 2.5, 4.5])
    t = choose_threshold(answerable, unanswerable, target_answered=0.8)
    assert t == 0.75  # refuses -5 and 0.5 and answers 9 of 10; 1.5 would give one answerable for nothing
    loose = choose_threshold(answerable, unanswerable, target_answered=0.5)
    # ties (0.75 and 4.75 both score 0.75) go to the highest cut: every unanswerable refused, half answered
    assert loose == 4.75 and (answerable >= loose).mean() == 0.5 and (unanswerable < loose).mean() == 1.0


def test_qa_file_rows_need_a_key_or_the_unanswerable_flag(tmp_path: Path) -> None:
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"question": "What?"}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"row 1: give 'answer_contains'"):
        read_qa(qa)


def test_the_committed_qa_set_is_big_enough_and_its_keys_are_in_the_corpus() -> None:
    from aiforge.tasks.chat.build import package_folder

    root = Path(__file__).resolve().parents[2] / "bench" / "qa"
    items = read_qa(root / "pygame.jsonl")
    answerable = [i for i in items if not i.unanswerable]
    kinds = [i.kind for i in items if i.unanswerable]
    assert len(answerable) >= 40 and kinds.count("out_of_domain") >= 5 and kinds.count("close") >= 5
    ref = package_folder("pygame/docs/generated/ref")
    for item in answerable:
        text = "".join(extract_text(ref.parent / item.gold_sources[0])[0]).lower()
        assert any(k.lower() in text for k in item.answer_contains), item


def test_bge_small_from_its_package_graph_is_a_chat_encoder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aiforge.hub.encoder_export import cached_encoder
    from aiforge.hub.onnx_encoder import OnnxEncoder
    from aiforge.hub.text_encoder import TextEncoder

    monkeypatch.setenv("AIFORGE_CACHE", str(tmp_path))
    folder, parity = cached_encoder("bge-small")
    assert parity["ok"] and parity["onnx_vs_torch_max_abs_diff"] < 1e-4  # vs the package graph, CLS pooled
    enc = OnnxEncoder(folder / "encoder.onnx", folder / "encoder_tokenizer.json")
    v = enc.embed(["How do I hide the mouse cursor?", "Hide or show the mouse cursor.", "The capital of Peru is Lima."])
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2
    # the same model in PyTorch (weights dequantized from that graph, tests/engine/test_hub.py), [CLS] pooled too
    from aiforge.hub.text_encoder import FEATURE_SCALE, load_tokenizer

    row = get_backbone("bge-small")
    texts = ["How do I hide the mouse cursor?", "Hide or show the mouse cursor.", "The capital of Peru is Lima."]
    torch_v = TextEncoder(row).embed(load_tokenizer(row.path() / "tokenizer.json", 256), texts) / FEATURE_SCALE
    assert ((torch_v * v).sum(1) >= 0.98).all()

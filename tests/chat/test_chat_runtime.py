"""The chat runtime on a real bundle: citations, "I don't know", intents and actions, prompt injection,
sessions, incremental re-indexing, torch-free serving, encoder parity, hybrid retrieval on BANKING77."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from chat_helpers import NOTES_TXT, Acme, build_bundle, spec_dict, write_docs

from aiforge.errors import InputError
from aiforge.tasks.chat.api import load_chat
from aiforge.tasks.chat.generate import GenerationRequest, Passage, build_messages
from aiforge.tasks.chat.runtime import DONT_KNOW, ChatRuntime, rewrite_followup
from aiforge.tasks.chat.spec import ChatSpec

pytestmark = pytest.mark.usefixtures("chat_env")

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rt(acme: Acme, tmp_path_factory: pytest.TempPathFactory) -> ChatRuntime:
    from aiforge.tasks.chat.sessions import SessionStore

    runtime = load_chat(acme.path)
    runtime.sessions = SessionStore(tmp_path_factory.mktemp("sessions") / "sessions.db")
    return runtime


@pytest.mark.parametrize(("question", "source", "heading", "needle"), [
    ("How do I reset my password?", "docs/guide.md", "Acme Storage guide > Resetting your password", "Reset password"),
    ("When are refunds issued?", "docs/billing.html", "Billing > Refunds", "14 days"),
    ("What are the support hours?", "docs/notes.txt", "notes", "Monday to Friday"),
    ("How often does the desktop app synchronise files?", "docs/manual.pdf", "manual > page 1", "five minutes"),
])
def test_answers_cite_the_chunk_they_come_from(rt: ChatRuntime, acme: Acme, question: str, source: str,
                                               heading: str, needle: str) -> None:
    turn = rt.ask(question)
    assert turn.kind == "retrieval", turn
    assert needle in turn.text
    assert turn.citations, "an answer without citations"
    first = turn.citations[0]
    assert (first["source"], first["heading"]) == (source, heading)
    assert f"[{first['id']}]" in turn.text
    if not source.endswith((".pdf", ".html")):  # spans index the file's own text for text formats
        raw = (acme.docs.parent / source).read_text(encoding="utf-8")
        assert needle in raw[first["start"]:first["end"]]


def test_says_it_does_not_know_below_the_threshold(rt: ChatRuntime) -> None:
    question = "Who won the football world cup in 1998?"
    turn = rt.ask(question)
    assert (turn.kind, turn.text, turn.citations) == ("dont_know", DONT_KNOW, [])
    hits = rt.search(question)
    assert rt.support(hits, rt.embed([question])[0]) < rt.retrieval["min_score"]
    saved = rt.retrieval["min_score"]
    rt.retrieval["min_score"] = -1.0  # with no threshold it would have guessed from the nearest chunk
    try:
        assert rt.ask(question).kind == "retrieval"
    finally:
        rt.retrieval["min_score"] = saved


def test_intents_answer_with_templates_actions_or_hand_over_to_retrieval(rt: ChatRuntime) -> None:
    greet = rt.ask("hello there!")
    assert (greet.kind, greet.intent, greet.text) == ("intent", "greet", "Hello! Ask me about Acme Storage.")
    sources = rt.ask("which documents can you answer from?")
    assert (sources.kind, sources.intent) == ("action", "sources")
    assert "docs/guide.md" in sources.text and "docs/manual.pdf" in sources.text
    account = rt.ask("I forgot my password, how do I reset it?")
    assert account.intent == "account" and account.kind == "retrieval"  # no response: retrieval answers
    assert "Reset password" in account.text
    off_topic = rt.ask("What is the boiling point of water?")
    assert off_topic.intent is None, "an out-of-scope question matched an intent"
    probs = rt.predict_proba(["hello", "list your sources"])
    assert [rt.labels[i] for i in probs.argmax(axis=1)] == ["greet", "sources"]
    cal = rt.intents.calibration if rt.intents else {}
    assert cal["out_of_scope_source"] == "document sentences" and 0 < cal["threshold"] < 1


def test_injected_document_text_stays_inside_the_data_block(rt: ChatRuntime) -> None:
    question = "How fast do hardware keys ship?"
    hits = rt.search(question)
    shipping = [h for h in hits if h.source == "docs/shipping.md"]
    assert shipping, "the shipping document should be retrieved"
    passages = [Passage(n, h.chunk_id, h.source, h.heading, h.text, h.similarity) for n, h in enumerate(hits, 1)]
    messages = build_messages(GenerationRequest(question, passages))
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "IGNORE ALL PREVIOUS INSTRUCTIONS" not in messages[0]["content"]
    user = messages[-1]["content"]
    inside = user[user.index("<documents>"):user.index("</documents>") + len("</documents>")]
    assert "IGNORE ALL PREVIOUS INSTRUCTIONS" in inside
    assert user.count("</documents>") == 1 and user.count("<system>") == 0  # the document cannot close the block
    assert "&lt;/documents&gt;" in inside and "&lt;system&gt;" in inside
    assert user.endswith(f"Question: {question}")
    # the extractive backend quotes the document only with its citation, as text
    assert "PWNED" not in rt.ask(question).text or "[" in rt.ask(question).text


def test_sessions_keep_history_rewrite_follow_ups_and_delete_messages(rt: ChatRuntime) -> None:
    sid = rt.sessions.create(rt.name)
    first = rt.ask("How much storage does the free plan include?", session_id=sid)
    assert "15 GB" in first.text
    follow = rt.ask("And what happens when I reach it?", session_id=sid)
    assert follow.query.startswith("How much storage does the free plan include?")
    assert "uploads pause" in follow.text
    history = rt.sessions.history(sid)
    assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]
    assert history[1]["content"] == first.text
    assert rt.sessions.delete(sid) is True
    assert rt.sessions.count_messages(sid) == 0 and not rt.sessions.exists(sid)
    assert rt.sessions.delete(sid) is False
    assert rewrite_followup("How do refunds work for annual plans today?", "Where is my invoice?") == \
        "How do refunds work for annual plans today?"


def test_session_store_mints_ids_binds_owners_and_keeps_the_file_private(tmp_path: Path) -> None:
    from aiforge.tasks.chat.sessions import SessionStore, key_owner

    store = SessionStore(tmp_path / "chat" / "sessions.db")
    alice, bob = key_owner("alice-key"), key_owner("bob-key")
    assert alice != bob and "alice-key" not in alice and len(alice) == len("key:") + 64
    ids = {store.create("acme", owner=alice) for _ in range(50)}
    assert len(ids) == 50 and min(len(i) for i in ids) == 32  # 192 random bits each
    sid = next(iter(ids))
    assert store.append(sid, "user", "hello")
    assert store.owns(sid, owner=alice) and not store.owns(sid, owner=bob)
    assert not store.delete(sid, owner=bob) and store.count_messages(sid) == 1
    assert store.delete(sid, owner=alice) and not store.exists(sid)
    assert not store.append(sid, "user", "again"), "a message never re-creates a deleted session"
    files = sorted(tmp_path.glob("chat/sessions.db*"))
    assert files and {oct(f.stat().st_mode & 0o777) for f in files} == {"0o600"}, files


def test_session_store_upgrades_a_database_from_before_owners(tmp_path: Path) -> None:
    import sqlite3

    from aiforge.tasks.chat.sessions import ANONYMOUS, LOCAL, SessionStore

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:  # the schema aiforge wrote before sessions had owners
        conn.execute("CREATE TABLE sessions (id TEXT PRIMARY KEY, bundle TEXT NOT NULL, created REAL NOT NULL)")
        conn.execute("INSERT INTO sessions VALUES ('guessable', '', 0)")
    path.chmod(0o644)
    store = SessionStore(path)
    assert store.exists("guessable")
    assert not any(store.owns("guessable", owner=o) for o in (LOCAL, ANONYMOUS)), "old sessions have no owner"
    assert store.owns(store.create("acme"), owner=LOCAL)
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_a_session_must_exist_before_it_takes_turns(rt: ChatRuntime) -> None:
    with pytest.raises(InputError, match="no session 'made-up'"):
        rt.ask("When are refunds issued?", session_id="made-up")
    assert not rt.sessions.exists("made-up")


def test_lone_surrogates_are_input_errors(rt: ChatRuntime) -> None:
    with pytest.raises(InputError, match=r"messages\[0\].content: not valid Unicode text \(a lone surrogate at "
                                         r"character 8\)"):
        rt.respond([{"role": "user", "content": "refunds \ud800"}])
    with pytest.raises(InputError, match=r"input\[1\]: not valid Unicode"):
        rt.check_texts(["fine", "\udfff"])


def test_answers_and_snippets_carry_no_document_markup(rt: ChatRuntime) -> None:
    turn = rt.ask("How fast do hardware keys ship?")  # docs/shipping.md closes the documents block
    assert "two business days" in turn.text
    for text in [turn.text, *(c["snippet"] for c in turn.citations)]:
        assert "</document" not in text and "<system>" not in text, text


def test_messages_over_the_limits_are_refused(rt: ChatRuntime) -> None:
    ok = [{"role": "user", "content": "hi"}]
    with pytest.raises(InputError, match="over the limit of 8"):
        rt.respond(ok * 9)
    with pytest.raises(InputError, match=r"messages\[0\].content: 501 characters"):
        rt.respond([{"role": "user", "content": "x" * 501}])
    with pytest.raises(InputError, match=r"max_tokens: 65 is outside 1..64"):
        rt.respond(ok, max_tokens=65)
    with pytest.raises(InputError, match="role"):
        rt.respond([{"role": "wizard", "content": "hi"}])
    with pytest.raises(InputError, match="last message must be a non-empty user message"):
        rt.respond([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])


def test_reindexing_reuses_unchanged_files(acme: Acme, tmp_path: Path) -> None:
    docs = write_docs(tmp_path / "docs")
    home = tmp_path / "home"
    first = build_bundle(spec_dict(docs, name="incr"), home, tmp_path / "spec")
    assert first.build.stats["added"] == 5 and first.build.stats["reused_chunks"] == 0
    (docs / "notes.txt").write_text(NOTES_TXT + "Saturday support is available for business plans.\n",
                                    encoding="utf-8")
    (docs / "shipping.md").unlink()
    second = build_bundle(spec_dict(docs, name="incr"), home, tmp_path / "spec")
    s = second.build.stats
    assert (s["unchanged"], s["changed"], s["added"], s["removed"]) == (3, 1, 0, 1)
    assert s["reused_chunks"] > 0 and s["embedded_chunks"] < first.build.stats["embedded_chunks"]
    assert second.exported.record.version == 2
    rt2 = load_chat(second.exported.path)
    assert "Saturday" in rt2.ask("Is there support on Saturday?").text
    # re-used vectors are the vectors a fresh build computes
    fresh = build_bundle(spec_dict(docs, name="fresh"), home, tmp_path / "spec2")
    rt3 = load_chat(fresh.exported.path)
    assert rt2.index.size == rt3.index.size
    np.testing.assert_allclose(rt2.index.vectors, rt3.index.vectors, atol=1e-5)


def test_encoder_graph_matches_pytorch(acme: Acme, rt: ChatRuntime) -> None:
    import torch

    from aiforge.hub.catalog import get_backbone
    from aiforge.hub.text_encoder import FEATURE_SCALE, TextEncoder, iter_batches, load_tokenizer

    metrics = json.loads((acme.path / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["encoder_parity"]["onnx_vs_torch_max_abs_diff"] < 1e-4
    texts = ["Refunds are issued within 14 days.", "hello", "a much longer sentence " * 20]
    backbone = get_backbone("minilm-l6")
    encoder = TextEncoder(backbone).eval()
    tok = load_tokenizer(backbone.path() / "tokenizer.json", 256)
    ref = np.zeros((len(texts), 384), dtype=np.float32)
    with torch.inference_mode():
        for idx, ids, mask in iter_batches(tok, texts, 8):
            ref[idx] = (encoder(ids, mask) / FEATURE_SCALE).numpy()
    got = rt.embed(texts)
    assert np.abs(got - ref).max() < 1e-4
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_hybrid_retrieval_beats_bm25_and_dense_alone_on_banking77(shared_data: Path, tmp_path: Path,
                                                                  chat_cache: Path) -> None:
    from aiforge.hub.encoder_export import cached_encoder
    from aiforge.hub.onnx_encoder import OnnxEncoder
    from aiforge.tasks.chat.evaluate import knn_retrieval, labelled_index

    def rows(name: str) -> list[dict[str, str]]:
        with (shared_data / name).open(newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))

    labels = sorted({r["category"] for r in rows("train.csv")})[::4]  # 20 of the 77 intents
    seen: dict[str, int] = {}
    train = [r for r in rows("train.csv") if r["category"] in labels
             and (seen := {**seen, r["category"]: seen.get(r["category"], 0) + 1})[r["category"]] <= 50]
    test = [r for r in rows("test.csv") if r["category"] in labels][::4]
    folder, _ = cached_encoder("minilm-l6")
    enc = OnnxEncoder(folder / "encoder.onnx", folder / "encoder_tokenizer.json")
    index = labelled_index(tmp_path / "knn", [r["text"] for r in train], [r["category"] for r in train], enc)
    queries, truth = [r["text"] for r in test], [r["category"] for r in test]
    qv = enc.embed(queries)
    default = ChatSpec.model_fields["retrieval"].default
    scores = {mode: knn_retrieval(index, queries, truth, qv, mode=mode, dense_weight=default.dense_weight)
              for mode in ("bm25", "dense", "hybrid")}
    summary = {m: s.to_dict() for m, s in scores.items()}
    assert scores["hybrid"].mrr > scores["dense"].mrr > scores["bm25"].mrr, summary
    assert scores["hybrid"].hit_at_1 >= scores["dense"].hit_at_1, summary
    assert scores["dense"].hit_at_1 > 0.8, summary


@pytest.mark.heavy  # ~110 s on 2 cores (indexes all of docs/): make test-heavy
def test_docs_assistant_example_validates_and_runs(tmp_path: Path) -> None:
    from aiforge.tasks.chat.api import DEMO_QUESTIONS, demo_spec, run_demo

    spec = ChatSpec.from_yaml(demo_spec())
    assert isinstance(spec, ChatSpec) and spec.knowledge.paths == [(REPO / "docs").resolve()]
    result, turns = run_demo(home=tmp_path / "home")
    assert result.build.stats["files"] >= 1
    kinds = [t.kind for _, t in turns]
    assert kinds[0] == "intent" and kinds[-1] == "dont_know", kinds
    assert all(k == "retrieval" for k in kinds[1:4]), kinds
    assert all(t.citations for _, t in turns[1:4])
    assert turns[2][1].query.startswith(DEMO_QUESTIONS[1])  # the follow-up was rewritten
    shutil.rmtree(tmp_path / "home", ignore_errors=True)


def test_cli_index_then_chat(acme: Acme, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from aiforge.cli import app

    runner = CliRunner()
    home = tmp_path / "home"
    first = runner.invoke(app, ["index", str(acme.docs), "--name", "cli-docs", "--home", str(home), "--no-progress"])
    assert first.exit_code == 0, first.output
    assert "registered cli-docs:1" in first.output
    again = runner.invoke(app, ["index", str(acme.docs), "--name", "cli-docs", "--home", str(home), "--no-progress"])
    assert again.exit_code == 0 and "registered cli-docs:2" in again.output
    asked = runner.invoke(app, ["chat", "cli-docs", "--home", str(home), "--json",
                                "--ask", "When are refunds issued?", "--ask", "Who painted the Mona Lisa?"])
    assert asked.exit_code == 0, asked.output
    rows = [json.loads(line) for line in asked.output.splitlines() if line.startswith("{")]
    assert "14 days" in rows[0]["answer"] and rows[0]["citations"][0]["source"] == "docs/billing.html"
    assert rows[1]["answer"] == DONT_KNOW and rows[1]["citations"] == []
    missing = runner.invoke(app, ["index", str(tmp_path / "nowhere"), "--home", str(home)])
    assert missing.exit_code != 0

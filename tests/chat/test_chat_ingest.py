"""Chat ingestion and the pieces that need no model: chunking, extraction, FTS queries, fusion, redaction, spec."""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path

import pytest
from chat_helpers import GUIDE_MD, PDF_TEXT, make_pdf, write_docs
from tokenizers import Tokenizer

from aiforge.errors import DataError, SpecError
from aiforge.hub.catalog import get_backbone
from aiforge.tasks.chat.data import chunk_text, extract_text, find_files, sentence_spans
from aiforge.tasks.chat.index import fts_query, rrf_fuse
from aiforge.tasks.chat.redact import redact
from aiforge.tasks.chat.spec import ChatSpec


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    tok = Tokenizer.from_file(str(get_backbone("minilm-l6").path() / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok


def test_markdown_sections_follow_headings_but_not_code_fences(tmp_path: Path) -> None:
    path = tmp_path / "guide.md"
    path.write_text(GUIDE_MD, encoding="utf-8")
    text, sections = extract_text(path)
    headings = [s.heading for s in sections]
    assert headings == ["Acme Storage guide", "Acme Storage guide > Resetting your password",
                        "Acme Storage guide > Storage quotas"]
    reset = sections[1]
    assert text[reset.start:reset.end].startswith("## Resetting your password")
    assert "acme login --reset" in text[reset.start:reset.end]  # the fenced '#' line did not cut the section


def test_html_text_skips_scripts_and_keeps_heading_paths(tmp_path: Path) -> None:
    docs = write_docs(tmp_path / "docs")
    text, sections = extract_text(docs / "billing.html")
    assert "secret" not in text and "color: red" not in text
    refunds = [s for s in sections if s.heading == "Billing > Refunds"]
    assert len(refunds) == 1
    assert "Refunds are issued within 14 days" in text[refunds[0].start:refunds[0].end]


def test_pdf_text_layer_is_extracted_per_page(tmp_path: Path) -> None:
    path = tmp_path / "manual.pdf"
    make_pdf(path, PDF_TEXT)
    text, sections = extract_text(path)
    assert PDF_TEXT in text
    assert sections[0].heading == "manual > page 1"
    bad = tmp_path / "broken.pdf"
    bad.write_bytes(b"%PDF-1.4 this is not a pdf")
    with pytest.raises(DataError, match=r"broken\.pdf"):
        extract_text(bad)


def test_chunks_are_overlapping_token_windows_with_exact_spans(tmp_path: Path, tokenizer: Tokenizer) -> None:
    body = " ".join(f"Sentence number {i} talks about storage quota {i}." for i in range(60))
    path = tmp_path / "long.md"
    path.write_text(f"# Long\n\n{body}\n", encoding="utf-8")
    text, sections = extract_text(path)
    chunks = chunk_text("long.md", text, sections, tokenizer, chunk_tokens=40, overlap_tokens=10)
    assert len(chunks) > 5
    for c in chunks:
        assert text[c.start:c.end].strip() == c.text
        assert len(tokenizer.encode(c.text, add_special_tokens=False).ids) <= 40
        assert c.heading == "Long"
    for a, b in itertools.pairwise(chunks):
        assert b.start < a.end, "consecutive windows must overlap"
        assert b.start > a.start
    # windows after the first start at a sentence boundary when one is within reach
    assert all(c.text.startswith(("Sentence", "# Long")) for c in chunks)
    assert chunks[-1].end >= len(text.rstrip())  # nothing at the end is lost


def test_sentence_spans_split_sentences_and_list_items() -> None:
    text = "First sentence here. Second one follows!\n\n- a list item that is long enough\n- another list item here"
    pieces = [text[a:b] for a, b in sentence_spans(text)]
    assert pieces == ["First sentence here.", "Second one follows!", "- a list item that is long enough",
                      "- another list item here"]


def test_find_files_filters_and_hashes(tmp_path: Path) -> None:
    docs = write_docs(tmp_path / "docs")
    (docs / "image.png").write_bytes(b"\x89PNG")
    files = find_files([docs], ["*.md", "*.txt", "*.html", "*.pdf"], ["notes.*"], max_bytes=1 << 20)
    rels = [f.rel for f in files]
    assert rels == ["docs/billing.html", "docs/guide.md", "docs/manual.pdf", "docs/shipping.md"]
    assert all(len(f.sha256) == 64 for f in files)
    with pytest.raises(DataError, match="not found"):
        find_files([tmp_path / "missing"], ["*.md"], [], max_bytes=1 << 20)
    with pytest.raises(DataError, match="max_file_bytes"):
        find_files([docs], ["*.md"], [], max_bytes=10)


def test_fts_query_quotes_every_word_so_user_text_cannot_inject_fts_syntax() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE VIRTUAL TABLE t USING fts5(text, tokenize='porter unicode61')")
    conn.execute("INSERT INTO t VALUES ('reset your password in settings')")
    for hostile in ['password" OR NEAR(*', "reset* AND -settings", "passwords?", 'col:text "unbalanced']:
        q = fts_query(hostile)
        conn.execute("SELECT rowid FROM t WHERE t MATCH ?", (q,)).fetchall()  # must not raise
    assert conn.execute("SELECT rowid FROM t WHERE t MATCH ?", (fts_query("How do I reset passwords?"),)).fetchall()
    assert fts_query("the a of") == '"the" OR "a" OR "of"'  # only stop words: keep them rather than nothing


def test_reciprocal_rank_fusion_rewards_agreement_and_honours_weights() -> None:
    fused = rrf_fuse([[1, 2, 3], [3, 1, 4]], [0.5, 0.5], k=60)
    assert [cid for cid, _ in fused][:2] == [1, 3]
    only_first = rrf_fuse([[1, 2], [2, 1]], [1.0, 0.0], k=60)
    assert only_first[0][0] == 1


def test_redact_masks_emails_cards_and_phones() -> None:
    text = "I am jane.doe@example.com, card 4111 1111 1111 1111, phone +44 20 7946 0958; order 12345 in 2026."
    out = redact(text)
    assert "jane.doe" not in out and "4111" not in out and "7946" not in out
    assert "[email]" in out and "[card]" in out and "[phone]" in out
    assert "order 12345 in 2026" in out  # short numbers stay


def test_chat_spec_errors_name_the_key(tmp_path: Path) -> None:
    base = {"name": "x", "task": "chat", "knowledge": {"paths": [str(tmp_path)]}}
    with pytest.raises(SpecError, match=r"retreival.*Did you mean 'retrieval'"):
        ChatSpec.from_dict({**base, "retreival": {}})
    with pytest.raises(SpecError, match="base_url"):
        ChatSpec.from_dict({**base, "generation": {"backend": "openai"}})
    with pytest.raises(SpecError, match="response or an action"):
        ChatSpec.from_dict({**base, "intents": {"items": [
            {"name": "a", "examples": ["x", "y"], "response": "r", "action": "list_sources"},
            {"name": "b", "examples": ["x", "y"]}]}})
    with pytest.raises(SpecError, match="overlap_tokens"):
        ChatSpec.from_dict({**base, "knowledge": {"paths": [str(tmp_path)], "chunk_tokens": 32, "overlap_tokens": 32}})
    with pytest.raises(SpecError, match=r"knowledge\.paths \(or knowledge\.packages\), intents"):
        ChatSpec.from_dict({"name": "x", "task": "chat"})

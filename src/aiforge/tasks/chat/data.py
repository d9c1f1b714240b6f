"""Knowledge ingestion: Markdown, plain text, HTML and PDF files into heading-aware chunks.

A file is first cut into sections at its headings (Markdown ``#`` lines outside code
fences, HTML ``<h1>``-``<h6>``, PDF pages), then each section into windows of
``chunk_tokens`` tokens of the encoder's own tokenizer, overlapping by ``overlap_tokens``.
Every chunk keeps its source path, its heading path and its character span in the file's
text (for HTML and PDF: in the extracted text).
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from tokenizers import Tokenizer

from aiforge.errors import DataError

__all__ = ["Chunk", "SourceFile", "chunk_text", "extract_text", "find_files", "sentence_spans"]


@dataclass(frozen=True)
class SourceFile:
    """A file to index: its path relative to the knowledge root, and its content hash."""

    path: Path
    rel: str
    sha256: str


@dataclass(frozen=True)
class Chunk:
    """A piece of a document: where it came from and its text."""

    source: str
    heading: str
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class _Section:
    heading: str
    start: int
    end: int


def find_files(roots: list[Path], include: list[str], exclude: list[str], *, max_bytes: int) -> list[SourceFile]:
    """Every file under ``roots`` matching ``include`` and not ``exclude``, with its sha256.

    Raises:
        DataError: a root does not exist, or a matching file is over ``max_bytes``.
    """
    found: dict[str, SourceFile] = {}
    for root in roots:
        if not root.exists():
            raise DataError(f"{root}: knowledge path not found. Set knowledge.paths to existing files or folders.")
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        base = root.parent if root.is_file() else root
        for path in files:
            rel = path.relative_to(base).as_posix()
            if not any(fnmatch.fnmatch(path.name, pat) for pat in include):
                continue
            if any(fnmatch.fnmatch(rel, pat) or fnmatch.fnmatch(path.name, pat) for pat in exclude):
                continue
            if any(part.startswith(".") for part in Path(rel).parts):
                continue
            size = path.stat().st_size
            if size > max_bytes:
                raise DataError(f"{path}: {size} bytes, over knowledge.max_file_bytes ({max_bytes}). "
                                "Raise the limit or exclude the file.")
            key = path.relative_to(root.parent).as_posix() if root.is_dir() else rel
            found[key] = SourceFile(path, key, hashlib.sha256(path.read_bytes()).hexdigest())
    return [found[k] for k in sorted(found)]


_MD_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


def _markdown_sections(text: str, title: str) -> list[_Section]:
    marks: list[tuple[int, int, str]] = []  # (offset, level, title)
    offset, fence = 0, False
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if stripped.startswith(("```", "~~~")):
            fence = not fence
        elif not fence:
            m = _MD_HEADING.match(line.rstrip("\n"))
            if m:
                marks.append((offset, len(m.group(1)), m.group(2).strip()))
        offset += len(line)
    return _sections_from_marks(marks, len(text), title)


def _sections_from_marks(marks: list[tuple[int, int, str]], length: int, title: str) -> list[_Section]:
    sections: list[_Section] = []
    if not marks or marks[0][0] > 0:
        sections.append(_Section(title, 0, marks[0][0] if marks else length))
    path: list[tuple[int, str]] = []
    for i, (start, level, name) in enumerate(marks):
        path = [p for p in path if p[0] < level] + [(level, name)]
        end = marks[i + 1][0] if i + 1 < len(marks) else length
        sections.append(_Section(" > ".join(p[1] for p in path), start, end))
    return sections


class _HtmlText(HTMLParser):
    """Visible text of an HTML page, with the offsets and levels of its headings."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.length = 0
        self.skip = 0
        self.marks: list[tuple[int, int, str]] = []
        self._heading: tuple[int, int, list[str]] | None = None

    def _emit(self, text: str) -> None:
        self.parts.append(text)
        self.length += len(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "noscript", "template"):
            self.skip += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self._emit("\n\n")
            self._heading = (self.length, int(tag[1]), [])
        elif tag in ("p", "div", "li", "br", "tr", "section", "article", "pre", "blockquote"):
            self._emit("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "noscript", "template"):
            self.skip = max(0, self.skip - 1)
        elif re.fullmatch(r"h[1-6]", tag) and self._heading is not None:
            start, level, words = self._heading
            self.marks.append((start, level, " ".join("".join(words).split())))
            self._heading = None
            self._emit("\n")

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        if self._heading is not None:
            self._heading[2].append(data)
        self._emit(data)


def extract_text(path: Path) -> tuple[str, list[_Section]]:
    """The text of a file and its sections (heading path, character span).

    Raises:
        DataError: the file cannot be read or parsed.
    """
    suffix = path.suffix.lower()
    title = path.stem
    try:
        if suffix == ".pdf":
            return _pdf_text(path)
        raw = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc}).") from exc
    if suffix in (".md", ".markdown"):
        return raw, _markdown_sections(raw, title)
    if suffix in (".html", ".htm"):
        parser = _HtmlText()
        parser.feed(raw)
        parser.close()
        text = "".join(parser.parts)
        return text, _sections_from_marks(parser.marks, len(text), title)
    return raw, [_Section(title, 0, len(raw))]


def _pdf_text(path: Path) -> tuple[str, list[_Section]]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path))
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError, OSError) as exc:
        raise DataError(f"{path}: not a readable PDF ({exc}).") from exc
    text, sections, offset = "", [], 0
    for i, page in enumerate(pages, start=1):
        sections.append(_Section(f"{path.stem} > page {i}", offset, offset + len(page)))
        text += page + "\n"
        offset = len(text)
    return text, sections


def chunk_text(source: str, text: str, sections: list[_Section], tokenizer: Tokenizer, *,
               chunk_tokens: int, overlap_tokens: int) -> list[Chunk]:
    """Cut each section into token windows that overlap; spans are offsets into ``text``."""
    if tokenizer.truncation is not None or tokenizer.padding is not None:
        tokenizer = Tokenizer.from_str(tokenizer.to_str())  # sections outgrow the encoder's window: count all
        tokenizer.no_truncation()
        tokenizer.no_padding()
    chunks: list[Chunk] = []
    for sec in sections:
        body = text[sec.start:sec.end]
        if not body.strip():
            continue
        offsets = tokenizer.encode(body, add_special_tokens=False).offsets
        if not offsets:
            continue
        # token j starts a sentence, paragraph or list item: windows begin and end there when one is in reach
        starts = [j for j in range(1, len(offsets)) if _boundary(body, offsets[j - 1][1], offsets[j][0])]
        n, lo = len(offsets), 0
        while lo < n:
            last = min(lo + chunk_tokens, n)
            hi = last
            if last < n:  # end at a boundary in the window's second half, if there is one
                hi = max((j for j in starts if lo + chunk_tokens // 2 < j <= last), default=last)
            a, b = sec.start + offsets[lo][0], sec.start + offsets[hi - 1][1]
            piece = text[a:b].strip()
            if piece:
                chunks.append(Chunk(source, sec.heading, a + (len(text[a:b]) - len(text[a:b].lstrip())),
                                    a + len(text[a:b].rstrip()), piece))
            if hi >= n:
                break
            # the next window overlaps this one by about overlap_tokens, starting at the boundary nearest that
            want = hi - overlap_tokens
            near = [j for j in starts if want - overlap_tokens < j < hi]
            lo = max(lo + 1, min(near, key=lambda j: abs(j - want)) if near else want)
    return chunks


def _boundary(body: str, prev_end: int, start: int) -> bool:
    gap = body[prev_end:start]
    if "\n\n" in gap or (gap and body[prev_end - 1] in ".!?"):
        return True
    return "\n" in gap and (body[start] in "-*+#|>" or bool(re.match(r"\d+\.\s", body[start:start + 4])))


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[A-Z0-9`*])|\n\s*\n|\n(?=\s*(?:[-*+]|\d+\.)\s)")


def sentence_spans(text: str, *, min_chars: int = 12) -> list[tuple[int, int]]:
    """Character spans of the sentences (and list items, paragraphs) of ``text``."""
    spans: list[tuple[int, int]] = []
    start = 0
    for m in [*_SENTENCE_END.finditer(text), None]:
        end = m.start() if m else len(text)
        piece = text[start:end]
        lead = len(piece) - len(piece.lstrip())
        a, b = start + lead, start + len(piece.rstrip())
        # a chunk that starts mid-sentence (no boundary within reach of the window's start)
        fragment = a == 0 and not (text[:1].isupper() or text[:1] in "#-*+>|`\"'([" or re.match(r"\d+\.\s", text))
        if b - a >= min_chars and not fragment and "```" not in text[a:b] and \
                sum(c.isalpha() for c in text[a:b]) > (b - a) / 2:
            spans.append((a, b))
        if m:
            start = m.end()
    return spans

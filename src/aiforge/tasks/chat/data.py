"""Knowledge ingestion: Markdown, reST, plain text, HTML and PDF files into heading-aware chunks.

A file is first cut into sections at its headings (Markdown ``#`` lines outside code
fences, HTML ``<h1>``-``<h6>``, PDF pages) and at its definitions (HTML ``<dt>``/``<dd>``
as Sphinx writes API references, reST ``.. function::``-style directives, Markdown headings
that are a signature or a code span), then each section into windows of ``chunk_tokens``
tokens of the encoder's own tokenizer, overlapping by ``overlap_tokens``. Every chunk keeps
its source path, its heading path, the definition it belongs to (name and signature, when
there is one) and its character span in the file's text (for HTML and PDF: in the extracted
text). A Sphinx page's navigation and summary tables are left out (only ``role="main"``).
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
    definition: str | None = None


@dataclass(frozen=True)
class _Section:
    heading: str
    start: int
    end: int
    definition: str | None = None


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


# a heading that names an API: `a code span` or name(args)
_MD_DEFINITION = re.compile(r"`[^`]+`|^[A-Za-z_][\w.]*\s*\(.*\)")


# reST / Sphinx directives that define an API object: ".. function:: name(args)", ".. py:method:: ..."
_RST_DEFINITION = re.compile(r"^\.\.\s+(?:py:)?(function|method|class|attribute|data|exception|decorator|"
                             r"classmethod|staticmethod|module|property)::\s*(.+?)\s*$")


# (offset, level, heading, definition or None)
_Mark = tuple[int, int, str, str | None]


def _markdown_sections(text: str, title: str) -> list[_Section]:
    marks: list[_Mark] = []
    offset, fence = 0, False
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if stripped.startswith(("```", "~~~")):
            fence = not fence
        elif not fence:
            m = _MD_HEADING.match(line.rstrip("\n"))
            if m:
                name = m.group(2).strip()
                definition = name.replace("`", "") if _MD_DEFINITION.search(name) else None
                marks.append((offset, len(m.group(1)), name, definition))
        offset += len(line)
    return _sections_from_marks(marks, len(text), title)


def _rst_sections(text: str, title: str) -> list[_Section]:
    """Sections of a reST file at its API directives (``.. function:: f(x)``) and its underlined titles."""
    marks: list[_Mark] = []
    lines = text.splitlines(keepends=True)
    offset = 0
    for i, line in enumerate(lines):
        m = _RST_DEFINITION.match(line.strip())
        nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if m:
            level = 8 if m.group(1) in ("module", "class", "exception") else 9
            marks.append((offset, level, m.group(2).split("(")[0].strip(), m.group(2)))
        elif line.strip() and len(nxt) >= len(line.strip()) >= 2 and len(set(nxt)) == 1 and nxt[0] in "=-~^*#":
            level = "=-~^*#".index(nxt[0]) + 1
            marks.append((offset, level, line.strip(), None))
        offset += len(line)
    return _sections_from_marks(marks, len(text), title)


def _sections_from_marks(marks: list[_Mark], length: int, title: str) -> list[_Section]:
    sections: list[_Section] = []
    if not marks or marks[0][0] > 0:
        sections.append(_Section(title, 0, marks[0][0] if marks else length))
    path: list[tuple[int, str]] = []
    for i, (start, level, name, definition) in enumerate(marks):
        path = [p for p in path if p[0] < level] + [(level, name)]
        end = marks[i + 1][0] if i + 1 < len(marks) else length
        sections.append(_Section(" > ".join(p[1] for p in path), start, end, definition))
    return sections


_BLOCK_TAGS = ("p", "div", "li", "br", "tr", "section", "article", "pre", "blockquote", "dd", "table")


class _HtmlText(HTMLParser):
    """Visible text of an HTML page, with the offsets and levels of its headings and definitions.

    ``<dt>`` terms (Sphinx's API signatures) become headings one level below the ``<h6>`` range per
    nesting depth of ``<dl>``, named by their ``id`` (``pygame.Rect.move``), with the first
    ``<span class="signature">`` of their ``<dd>`` (or the term's own text) as the definition.
    With ``main_only`` only the text inside ``role="main"`` / ``<main>`` is kept (not navigation).
    """

    def __init__(self, *, main_only: bool = False) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.length = 0
        self.skip = 0
        self.marks: list[_Mark] = []
        self._heading: tuple[int, int, list[str], str | None] | None = None
        self._main: list[str] | None = [] if main_only else None  # open tags from the main element down
        self._skip_tags: list[str] = []  # tags whose content is skipped (header links, summary tables)
        self._dl = 0
        self._signature: list[str] | None = None
        self._pending_definition: int | None = None  # index in marks of a dt waiting for its signature

    def _emit(self, text: str) -> None:
        self.parts.append(text)
        self.length += len(text)

    def _outside_main(self) -> bool:
        return self._main is not None and not self._main

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if self._main is not None:
            if self._main:
                if tag not in _VOID:
                    self._main.append(tag)
            elif a.get("role") == "main" or tag == "main":
                self._main.append(tag)
                return
        if self._outside_main():
            return
        classes = (a.get("class") or "").split()
        if self._skip_tags:
            if tag not in _VOID:
                self._skip_tags.append(tag)
            return
        if (tag == "a" and "headerlink" in classes) or (tag == "table" and "toc" in classes):
            self._skip_tags.append(tag)
            return
        if tag in ("script", "style", "noscript", "template"):
            self.skip += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self._emit("\n\n")
            self._heading = (self.length, int(tag[1]), [], None)
        elif tag == "dl":
            self._dl += 1
        elif tag == "dt" and self._heading is None:
            self._emit("\n\n")
            self._heading = (self.length, 6 + self._dl, [], a.get("id"))
        elif tag == "span" and "signature" in classes and self._pending_definition is not None:
            self._signature = []
        elif tag in _BLOCK_TAGS:
            self._emit("\n")

    def handle_endtag(self, tag: str) -> None:
        if self._main is not None and self._main and tag in self._main:
            while self._main and self._main.pop() != tag:
                pass
            if not self._main:
                return
        if self._outside_main():
            return
        if self._skip_tags:
            if tag in self._skip_tags:
                while self._skip_tags and self._skip_tags.pop() != tag:
                    pass
            return
        if tag in ("script", "style", "noscript", "template"):
            self.skip = max(0, self.skip - 1)
        elif tag == "dl":
            self._dl = max(0, self._dl - 1)
        elif self._heading is not None and (re.fullmatch(r"h[1-6]", tag) or tag == "dt"):
            start, level, words, ident = self._heading
            text = " ".join("".join(words).split())
            if tag == "dt":
                self.marks.append((start, level, ident or text, text))
                self._pending_definition = len(self.marks) - 1
            else:
                self.marks.append((start, level, text, None))
            self._heading = None
            self._emit("\n")
        elif tag == "span" and self._signature is not None and self._pending_definition is not None:
            sig = " ".join("".join(self._signature).split())
            i = self._pending_definition
            off, level, name, _ = self.marks[i]
            if sig:
                self.marks[i] = (off, level, name, f"{name}: {sig}" if name != sig else sig)
            self._signature = None
            self._pending_definition = None
            self._emit("\n")
        elif tag in _BLOCK_TAGS:
            self._emit("\n")

    def handle_data(self, data: str) -> None:
        if self.skip or self._outside_main() or self._skip_tags:
            return
        if self._heading is not None:
            self._heading[2].append(data)
        if self._signature is not None:
            self._signature.append(data)
        self._emit(data)


_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track",
                   "wbr"})


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
        parser = _HtmlText(main_only='role="main"' in raw or "<main" in raw)
        parser.feed(raw)
        parser.close()
        text = "".join(parser.parts)
        return text, _sections_from_marks(parser.marks, len(text), title)
    if suffix in (".rst", ".rest"):
        return raw, _rst_sections(raw, title)
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
                                    a + len(text[a:b].rstrip()), piece, sec.definition))
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

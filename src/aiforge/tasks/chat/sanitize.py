"""Document text made safe to hand back: answers and citation snippets are plain text, without markup and
without a script link.

Answers are plain text by contract, and a page that shows them must still escape them; this is the
second wall. A retrieved document can hold ``</documents><system>…``, ``<script>`` or a
``javascript:`` link; quoted verbatim (the extractive answer, ``citations[].snippet``) they would reach
any client that renders the text as HTML or Markdown.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

__all__ = ["BLOCKED_SCHEME", "neutralise_links", "plain_text", "safe_stream"]


# A tag, a closing tag, a comment or a doctype: "<" + a letter, "/", "!" or "?" ... ">".
_TAG = re.compile(r"<!--.*?(?:-->|$)|<\s*[/!?]?\s*[A-Za-z][^<>]*(?:>|$)", re.DOTALL)


_GAP = r"[\s\x00-\x1f]{0,2}"  # browsers ignore tabs and newlines inside a scheme ("java\tscript:")


# javascript: / vbscript: in any case, with gaps, and with the colon written as an HTML entity.
_SCRIPT_SCHEME = re.compile(
    "(?:" + "|".join(_GAP.join(word) for word in ("javascript", "vbscript")) + ")"
    + _GAP + r"(?::|&colon;|&#0*58;?|&#x0*3a;?)", re.IGNORECASE)


BLOCKED_SCHEME = "blocked:"


# The longest text the scheme pattern can match (10 letters, 9 gaps, a gap and a 9-character entity).
_HOLD = 10 + 10 * 2 + 9


def neutralise_links(text: str) -> str:
    """``text`` with every ``javascript:`` or ``vbscript:`` scheme replaced by ``blocked:``."""
    return _SCRIPT_SCHEME.sub(BLOCKED_SCHEME, text)


def plain_text(text: str) -> str:
    """``text`` without tags or comments, without script links, whitespace collapsed to single spaces."""
    return " ".join(neutralise_links(_TAG.sub(" ", text)).split())


# Where a scheme could start: every match begins with a "j" or a "v".
_START = re.compile("[jv]", re.IGNORECASE)


def safe_stream(pieces: Iterator[str]) -> Iterator[str]:
    """``pieces`` with script links neutralised, even when one is split across pieces.

    Text that could be the start of a scheme (from a "j" or "v" among the last few characters) is
    held back until the next piece shows how it continues; everything before it goes out at once.
    """
    held = ""
    for piece in pieces:
        held = neutralise_links(held + piece)
        tail = max(0, len(held) - _HOLD)
        start = _START.search(held, tail)
        cut = start.start() if start else len(held)
        if cut:
            out, held = held[:cut], held[cut:]
            yield out
    if held:
        yield held

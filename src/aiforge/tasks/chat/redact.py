"""PII redaction for logs: e-mail addresses, card numbers and phone numbers become placeholders."""

from __future__ import annotations

import re

__all__ = ["redact"]


_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


# 13-19 digits, optionally grouped by spaces or dashes (every card scheme's length range).
_CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")


# An optional +country code, then at least 7 digits with common separators.
_PHONE = re.compile(r"(?<![\w])\+?\d(?:[\s().-]*\d){6,14}(?!\d)")


def redact(text: str) -> str:
    """``text`` with e-mails, card numbers and phone numbers replaced by ``[email]``, ``[card]``, ``[phone]``."""
    text = _EMAIL.sub("[email]", text)
    text = _CARD.sub("[card]", text)
    return _PHONE.sub("[phone]", text)

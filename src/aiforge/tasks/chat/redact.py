"""Redaction for logs: secrets, e-mail addresses, card numbers and phone numbers become placeholders.

The chat log holds no question text unless the server's ``chat_log_text`` setting asks for it, and then
only through :func:`redact`.
"""

from __future__ import annotations

import re

__all__ = ["redact"]


# A word that announces a secret, then (after "is", ":" or "=") the secret itself: "password hunter2".
_SECRET = re.compile(
    r"(?i)\b(pass(?:word|wd|phrase|code)?|pwd|pin|secret|token|api[ _-]?key|access[ _-]?key|otp|cvv|cvc|ssn)"
    r"(\s*(?:is\s+|:|=)\s*|\s+)([^\s?!.,;:]\S*)")


# Credentials by shape: "sk-..." keys, bearer tokens, long mixed letter-digit strings.
_TOKEN = re.compile(r"(?i)\bbearer\s+\S+|\b(?:sk|pk|rk|ghp|xox[abp])[-_][A-Za-z0-9_-]{8,}"
                    r"|\b(?=[A-Za-z_-]*\d)(?=\d*[A-Za-z])[A-Za-z0-9_-]{24,}\b")


_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


# 13-19 digits, optionally grouped by spaces or dashes (every card scheme's length range).
_CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")


# An optional +country code, then at least 7 digits with common separators.
_PHONE = re.compile(r"(?<![\w])\+?\d(?:[\s().-]*\d){6,14}(?!\d)")


def redact(text: str) -> str:
    """``text`` with secrets, e-mails, card and phone numbers replaced by ``[secret]``, ``[email]``,
    ``[card]``, ``[phone]``."""
    text = _SECRET.sub(lambda m: f"{m.group(1)}{m.group(2)}[secret]", text)
    text = _TOKEN.sub("[secret]", text)
    text = _EMAIL.sub("[email]", text)
    text = _CARD.sub("[card]", text)
    return _PHONE.sub("[phone]", text)

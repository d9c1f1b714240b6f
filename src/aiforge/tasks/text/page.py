"""The text kind's playground page: its try-it panel (``panel.js`` beside this file)."""

from __future__ import annotations

from aiforge.serve.web.page import KindPage

__all__ = ["PAGE"]

PAGE = KindPage("aiforge.tasks.text")

"""Conversations stored in SQLite (``$AIFORGE_HOME/chat/sessions.db``); deleting a session deletes its messages."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aiforge.bundle.registry import default_home

__all__ = ["SessionStore"]


_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, bundle TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    role TEXT NOT NULL, content TEXT NOT NULL, created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_session ON messages(session_id, id);
"""


class SessionStore:
    """Sessions and their messages; safe to share between threads."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_home() / "chat" / "sessions.db"
        self._lock = threading.Lock()
        self._ready = False

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if not self._ready:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            try:
                conn.execute("PRAGMA foreign_keys = ON")
                if not self._ready:
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.executescript(_SCHEMA)
                    self._ready = True
                yield conn
            finally:
                conn.close()

    def create(self, bundle: str, session_id: str | None = None) -> str:
        """A new session's id (``session_id`` if given and free)."""
        sid = session_id or uuid.uuid4().hex
        with self._db() as conn:
            conn.execute("INSERT OR IGNORE INTO sessions VALUES (?, ?, ?)", (sid, bundle, time.time()))
        return sid

    def exists(self, session_id: str) -> bool:
        with self._db() as conn:
            return conn.execute("SELECT 1 FROM sessions WHERE id = ?", (session_id,)).fetchone() is not None

    def append(self, session_id: str, role: str, content: str) -> None:
        """Add one message to a session (created on first use)."""
        with self._db() as conn:
            conn.execute("INSERT OR IGNORE INTO sessions VALUES (?, ?, ?)", (session_id, "", time.time()))
            conn.execute("INSERT INTO messages (session_id, role, content, created) VALUES (?, ?, ?, ?)",
                         (session_id, role, content, time.time()))

    def history(self, session_id: str, *, last: int | None = None) -> list[dict[str, str]]:
        """The session's messages, oldest first (only the ``last`` ones if given)."""
        with self._db() as conn:
            rows = conn.execute("SELECT role, content FROM messages WHERE session_id = ? ORDER BY id DESC"
                                + (" LIMIT ?" if last is not None else ""),
                                (session_id, last) if last is not None else (session_id,)).fetchall()
        return [{"role": r, "content": c} for r, c in reversed(rows)]

    def delete(self, session_id: str) -> bool:
        """Delete a session and all its messages; False if there was no such session."""
        with self._db() as conn:
            cur = conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
            conn.execute("DELETE FROM messages WHERE session_id = ?", (session_id,))  # also pre-FK rows
            return cur.rowcount > 0

    def count_messages(self, session_id: str) -> int:
        with self._db() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM messages WHERE session_id = ?", (session_id,)).fetchone()[0])

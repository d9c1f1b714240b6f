"""Conversations stored in SQLite (``$AIFORGE_HOME/chat/sessions.db``); deleting a session deletes its messages.

Isolation: the store mints every session id (192 random bits, so an id cannot be guessed) and binds the
session to an owner, the digest of the API key that created it (:func:`key_owner`; the key itself is
never stored). Lookups name the owner, and another owner's session reads exactly like a missing one.
The database and its WAL files are readable by their user only (0600, in a 0700 folder).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aiforge.bundle.registry import default_home

__all__ = ["ANONYMOUS", "LOCAL", "SessionStore", "key_owner"]


LOCAL = "local"  # the owner of sessions made by the Python API and the CLI


ANONYMOUS = "anonymous"  # the owner of sessions made over HTTP on a server without API keys


_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, bundle TEXT NOT NULL, created REAL NOT NULL,
                                     owner TEXT);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    role TEXT NOT NULL, content TEXT NOT NULL, created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_session ON messages(session_id, id);
"""


def key_owner(api_key: str | None) -> str:
    """The owner an API key's sessions are bound to: its sha256 digest (``ANONYMOUS`` without a key)."""
    if not api_key:
        return ANONYMOUS
    return "key:" + hashlib.sha256(api_key.encode("utf-8")).hexdigest()


def _private_file(path: Path) -> None:
    """Create ``path`` readable and writable by its user only, or narrow an existing one to that."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


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
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                _private_file(self.path)  # sqlite gives its -wal and -shm files the database's mode
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            try:
                conn.execute("PRAGMA foreign_keys = ON")
                if not self._ready:
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.executescript(_SCHEMA)
                    columns = {row[1] for row in conn.execute("PRAGMA table_info(sessions)")}
                    if "owner" not in columns:  # a database from before owners: its sessions stay unreachable
                        conn.execute("ALTER TABLE sessions ADD COLUMN owner TEXT")
                    for suffix in ("-wal", "-shm"):
                        extra = self.path.with_name(self.path.name + suffix)
                        if extra.exists():
                            os.chmod(extra, 0o600)
                    self._ready = True
                yield conn
            finally:
                conn.close()

    def create(self, bundle: str, *, owner: str = LOCAL, session_id: str | None = None) -> str:
        """A new session of ``owner``, its id minted here.

        ``session_id`` (the CLI's ``--session``) continues that session when it exists, or starts it;
        the HTTP routes never pass one.
        """
        sid = session_id or secrets.token_urlsafe(24)
        with self._db() as conn:
            conn.execute("INSERT OR IGNORE INTO sessions (id, bundle, created, owner) VALUES (?, ?, ?, ?)",
                         (sid, bundle, time.time(), owner))
        return sid

    def exists(self, session_id: str) -> bool:
        with self._db() as conn:
            return conn.execute("SELECT 1 FROM sessions WHERE id = ?", (session_id,)).fetchone() is not None

    def owns(self, session_id: str, *, owner: str) -> bool:
        """True when ``session_id`` exists and belongs to ``owner``."""
        with self._db() as conn:
            return conn.execute("SELECT 1 FROM sessions WHERE id = ? AND owner = ?",
                                (session_id, owner)).fetchone() is not None

    def append(self, session_id: str, role: str, content: str) -> bool:
        """Add one message to an existing session; False (nothing written) when there is no such session."""
        with self._db() as conn:
            cur = conn.execute("INSERT INTO messages (session_id, role, content, created) "
                               "SELECT id, ?, ?, ? FROM sessions WHERE id = ?",
                               (role, content, time.time(), session_id))
            return cur.rowcount > 0

    def history(self, session_id: str, *, last: int | None = None) -> list[dict[str, str]]:
        """The session's messages, oldest first (only the ``last`` ones if given)."""
        with self._db() as conn:
            rows = conn.execute("SELECT role, content FROM messages WHERE session_id = ? ORDER BY id DESC"
                                + (" LIMIT ?" if last is not None else ""),
                                (session_id, last) if last is not None else (session_id,)).fetchall()
        return [{"role": r, "content": c} for r, c in reversed(rows)]

    def delete(self, session_id: str, *, owner: str | None = None) -> bool:
        """Delete a session and all its messages (only if ``owner``'s, when given); False if nothing was
        deleted."""
        with self._db() as conn:
            if owner is None:
                cur = conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
            else:
                cur = conn.execute("DELETE FROM sessions WHERE id = ? AND owner = ?", (session_id, owner))
            if cur.rowcount:
                conn.execute("DELETE FROM messages WHERE session_id = ?", (session_id,))  # also pre-FK rows
            return cur.rowcount > 0

    def count_messages(self, session_id: str) -> int:
        with self._db() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM messages WHERE session_id = ?", (session_id,)).fetchone()[0])

"""The knowledge index inside a chat bundle: SQLite FTS5 (BM25) + a float32 matrix of MiniLM vectors.

Files: ``knowledge.db`` (tables ``files``, ``chunks``, ``sentences`` and the FTS5 table
``chunks_fts``) and ``vectors.npy`` / ``sentence_vectors.npy`` (float32, unit rows, read
with ``allow_pickle=False``). Search fuses the BM25 and dense rankings by weighted
reciprocal rank: ``score = w / (k + rank_dense) + (1 - w) / (k + rank_bm25)``.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aiforge.errors import BundleError

__all__ = [
    "DB_FILE",
    "SENTENCE_VECTORS",
    "VECTORS",
    "Hit",
    "IndexRows",
    "KnowledgeIndex",
    "fts_query",
    "rrf_fuse",
    "write_index",
]


DB_FILE = "knowledge.db"


VECTORS = "vectors.npy"


SENTENCE_VECTORS = "sentence_vectors.npy"


_SCHEMA = """
CREATE TABLE files (path TEXT PRIMARY KEY, sha256 TEXT NOT NULL, chunks INTEGER NOT NULL);
CREATE TABLE chunks (id INTEGER PRIMARY KEY, source TEXT NOT NULL, heading TEXT NOT NULL,
                     start INTEGER NOT NULL, "end" INTEGER NOT NULL, text TEXT NOT NULL, label TEXT,
                     definition TEXT);
CREATE TABLE sentences (id INTEGER PRIMARY KEY, chunk_id INTEGER NOT NULL, start INTEGER NOT NULL,
                        "end" INTEGER NOT NULL);
CREATE VIRTUAL TABLE chunks_fts USING fts5(text, heading, content='chunks', content_rowid='id',
                                           tokenize='porter unicode61');
"""


# Words too common to help BM25 find anything; they only slow FTS5 down.
_STOP = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "can", "could", "did", "do", "does", "for", "from",
    "had", "has", "have", "how", "i", "if", "in", "into", "is", "it", "its", "me", "my", "of", "on", "or", "our",
    "so", "than", "that", "the", "their", "them", "then", "there", "these", "they", "this", "to", "was", "we",
    "were", "what", "when", "where", "which", "who", "why", "will", "with", "would", "you", "your",
})


def fts_query(text: str) -> str:
    """An FTS5 query matching any content word of ``text`` (each quoted, so no FTS syntax gets through)."""
    words = [w for w in re.findall(r"\w+", text.lower()) if w not in _STOP]
    if not words:
        words = re.findall(r"\w+", text.lower())
    return " OR ".join(f'"{w}"' for w in dict.fromkeys(words))


def rrf_fuse(rankings: Sequence[Sequence[int]], weights: Sequence[float], *, k: float) -> list[tuple[int, float]]:
    """Weighted reciprocal-rank fusion of ranked id lists; (id, score), best first."""
    scores: dict[int, float] = {}
    for ranking, w in zip(rankings, weights, strict=True):
        for rank, cid in enumerate(ranking, start=1):
            scores[cid] = scores.get(cid, 0.0) + w / (k + rank)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk, with its fused score and its cosine similarity to the query."""

    chunk_id: int
    source: str
    heading: str
    start: int
    end: int
    text: str
    label: str | None
    score: float
    similarity: float
    definition: str | None = None  # the API definition (name: signature) the chunk belongs to
    relevance: float | None = None  # the reranker's logit, when the bundle has a reranker


@dataclass
class IndexRows:
    """What ``write_index`` stores: file hashes, chunks (with optional labels) and vectors."""

    files: list[tuple[str, str, int]]  # (path, sha256, number of chunks)
    # (source, heading, start, end, text, label, definition)
    chunks: list[tuple[str, str, int, int, str, str | None, str | None]]
    vectors: np.ndarray
    sentences: list[tuple[int, int, int]]  # (chunk index, start, end) within the chunk text
    sentence_vectors: np.ndarray


def write_index(directory: Path, rows: IndexRows) -> None:
    """Write ``knowledge.db`` and the vector files into ``directory``."""
    db = directory / DB_FILE
    db.unlink(missing_ok=True)
    conn = sqlite3.connect(db)
    try:
        conn.executescript(_SCHEMA)
        conn.executemany("INSERT INTO files VALUES (?, ?, ?)", rows.files)
        conn.executemany('INSERT INTO chunks (id, source, heading, start, "end", text, label, definition) '
                         "VALUES (?,?,?,?,?,?,?,?)", [(i, *c) for i, c in enumerate(rows.chunks)])
        conn.executemany('INSERT INTO sentences (id, chunk_id, start, "end") VALUES (?, ?, ?, ?)',
                         [(i, *s) for i, s in enumerate(rows.sentences)])
        conn.execute("INSERT INTO chunks_fts (chunks_fts) VALUES ('rebuild')")
        conn.commit()
        conn.execute("VACUUM")
    finally:
        conn.close()
    np.save(directory / VECTORS, np.ascontiguousarray(rows.vectors, dtype=np.float32), allow_pickle=False)
    np.save(directory / SENTENCE_VECTORS, np.ascontiguousarray(rows.sentence_vectors, dtype=np.float32),
            allow_pickle=False)


class KnowledgeIndex:
    """A read-only view of a bundle's index; thread-safe (one SQLite connection per thread)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        try:
            self.vectors = np.load(directory / VECTORS, allow_pickle=False)
            self.sentence_vectors = np.load(directory / SENTENCE_VECTORS, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise BundleError(f"{directory}: vector files are missing or unreadable ({exc}).") from exc
        self._local = threading.local()
        conn = self._conn()
        self.size = int(conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0])
        columns = {r[1] for r in conn.execute("PRAGMA table_info(chunks)")}
        self._definition = "definition" if "definition" in columns else "NULL"  # bundles before definitions
        if self.size != len(self.vectors):
            raise BundleError(f"{directory}: {self.size} chunks but {len(self.vectors)} vectors; rebuild the index.")
        rows = conn.execute('SELECT id, chunk_id, start, "end" FROM sentences ORDER BY id').fetchall()
        self.sentence_chunk = np.array([r[1] for r in rows], dtype=np.int64)
        self.sentence_span = [(int(r[2]), int(r[3])) for r in rows]
        self._by_chunk: dict[int, list[int]] = {}
        for sid, cid in enumerate(self.sentence_chunk.tolist()):
            self._by_chunk.setdefault(int(cid), []).append(sid)

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            uri = f"file:{(self.directory / DB_FILE).resolve()}?mode=ro&immutable=1"
            try:
                conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
                conn.execute("SELECT 1 FROM chunks LIMIT 1")
            except sqlite3.Error as exc:
                raise BundleError(f"{self.directory}: {DB_FILE} is missing or unreadable ({exc}).") from exc
            self._local.conn = conn
        return conn

    def files(self) -> dict[str, tuple[str, int]]:
        """Indexed files: path -> (sha256, chunk count)."""
        return {p: (h, n) for p, h, n in self._conn().execute("SELECT path, sha256, chunks FROM files")}

    def chunk_rows(self, source: str) -> list[tuple[int, str, int, int, str, str | None, str | None]]:
        """(id, heading, start, end, text, label, definition) of every chunk of ``source``, in order."""
        return self._conn().execute(f'SELECT id, heading, start, "end", text, label, {self._definition} FROM chunks '
                                    "WHERE source = ? ORDER BY id", (source,)).fetchall()

    def sentences_of(self, chunk_id: int) -> list[int]:
        """Ids of the sentences of a chunk."""
        return self._by_chunk.get(chunk_id, [])

    def bm25(self, query: str, limit: int) -> list[int]:
        """Chunk ids ranked by FTS5 BM25 (best first)."""
        q = fts_query(query)
        if not q:
            return []
        rows = self._conn().execute(
            "SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY bm25(chunks_fts) LIMIT ?", (q, limit))
        return [int(r[0]) for r in rows]

    def similarities(self, query_vector: np.ndarray) -> np.ndarray:
        """Every chunk's cosine similarity to the query: max of the chunk's and its sentences'."""
        sims = self.vectors @ query_vector
        if len(self.sentence_chunk):
            np.maximum.at(sims, self.sentence_chunk, self.sentence_vectors @ query_vector)
        return np.asarray(sims)

    def dense(self, query_vector: np.ndarray, limit: int) -> tuple[list[int], np.ndarray]:
        """Chunk ids ranked by cosine similarity, and every chunk's similarity.

        A chunk's similarity is the best of its own and its sentences' (a long chunk can hold the
        one sentence that matters, diluted in the chunk's mean-pooled vector).
        """
        sims = self.similarities(query_vector)
        n = min(limit, len(sims))
        if n == 0:
            return [], sims
        top = np.argpartition(-sims, n - 1)[:n]
        return [int(i) for i in top[np.argsort(-sims[top], kind="stable")]], sims

    def search(self, query: str, query_vector: np.ndarray, *, k: int, mode: str = "hybrid", candidates: int = 50,
               rrf_k: float = 60.0, dense_weight: float = 0.5) -> list[Hit]:
        """The ``k`` best chunks for a query by ``mode`` (hybrid, bm25 or dense)."""
        dense_ids, sims = self.dense(query_vector, candidates) if mode != "bm25" else \
            ([], self.similarities(query_vector))
        bm25_ids = self.bm25(query, candidates) if mode != "dense" else []
        if mode == "dense":
            ranked = [(i, float(sims[i])) for i in dense_ids]
        elif mode == "bm25":
            ranked = [(i, 1.0 / (rrf_k + r)) for r, i in enumerate(bm25_ids, start=1)]
        else:
            ranked = rrf_fuse([dense_ids, bm25_ids], [dense_weight, 1.0 - dense_weight], k=rrf_k)
        return self.fetch([(cid, score, float(sims[cid])) for cid, score in ranked[:k]])

    def fetch(self, scored: list[tuple[int, float, float]]) -> list[Hit]:
        """Hits for (chunk id, score, similarity) triples, in the given order."""
        if not scored:
            return []
        ids = [s[0] for s in scored]
        marks = ",".join("?" * len(ids))
        rows = {int(r[0]): r for r in self._conn().execute(
            f'SELECT id, source, heading, start, "end", text, label, {self._definition} FROM chunks '
            f"WHERE id IN ({marks})", ids)}
        return [Hit(cid, rows[cid][1], rows[cid][2], int(rows[cid][3]), int(rows[cid][4]), rows[cid][5],
                    rows[cid][6], score, sim, rows[cid][7]) for cid, score, sim in scored if cid in rows]

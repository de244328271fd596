"""SQLite tables of evaluations, the dataset cache and data-access tokens (`<data_dir>/ops.db`).

Kept apart from the job store: the job tables stay the scheduler's, these belong to the
evaluation and data features. Same rules as `store.py`: short synchronous statements on the
event loop's thread, so each method is atomic with respect to every coroutine.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from scaimind.coordinator.persistence.records import (
    BenchmarkResult,
    CacheEntry,
    EvaluationRecord,
    OutputClaim,
    from_row,
)
from scaimind.coordinator.persistence.sqlite import open_database, transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cache_entries (
    tenant_id TEXT NOT NULL,
    dataset_uri TEXT NOT NULL,
    node_id TEXT NOT NULL,
    path TEXT NOT NULL,
    size_bytes INTEGER NOT NULL DEFAULT 0,
    num_rows INTEGER NOT NULL DEFAULT 0,
    status INTEGER NOT NULL,
    source_size INTEGER NOT NULL DEFAULT -1,
    source_mtime_ns INTEGER NOT NULL DEFAULT -1,
    cached_at REAL NOT NULL,
    last_accessed_at REAL NOT NULL,
    hit_count INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, dataset_uri, node_id)
);
CREATE TABLE IF NOT EXISTS cache_stats (
    tenant_id TEXT PRIMARY KEY,
    hits INTEGER NOT NULL DEFAULT 0,
    misses INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS job_tokens (
    job_id TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS evaluations (
    evaluation_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    job_id TEXT NOT NULL,
    request BLOB NOT NULL,
    model_path TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS output_claims (
    path TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    job_id TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS benchmark_results (
    evaluation_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    status INTEGER NOT NULL,
    score REAL NOT NULL DEFAULT 0,
    metrics TEXT NOT NULL DEFAULT '{}',
    error TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (evaluation_id, position)
);
"""
# Expired tokens are useless; they are deleted this long after expiry.
_TOKEN_KEEP_SECONDS = 3600.0


class OpsStore:
    """All SQL of evaluations, the dataset cache and the data-access tokens."""

    def __init__(self, path: Path) -> None:
        self._db = open_database(path, _SCHEMA)

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self._db)

    # ---- tokens -----------------------------------------------------------------------------

    def put_token(self, job_id: str, token: str, expires_at: float) -> None:
        """Remember the data-access token a job's PREPARING will use; drop long-expired ones."""
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO job_tokens (job_id, token, expires_at) VALUES (?, ?, ?)",
                (job_id, token, expires_at),
            )
            db.execute(
                "DELETE FROM job_tokens WHERE expires_at < ?", (time.time() - _TOKEN_KEEP_SECONDS,)
            )

    def token(self, job_id: str) -> str | None:
        """The token remembered for a job."""
        row = self._db.execute(
            "SELECT token FROM job_tokens WHERE job_id = ?", (job_id,)
        ).fetchone()
        return None if row is None else str(row["token"])

    # ---- output directories -----------------------------------------------------------------

    def output_claims(self) -> list[OutputClaim]:
        """Every claimed output directory."""
        rows = self._db.execute("SELECT * FROM output_claims").fetchall()
        return [from_row(OutputClaim, r) for r in rows]

    def claim_output(self, path: str, tenant_id: str, job_id: str) -> bool:
        """Claim a directory for a job; False when another claim holds it already."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO output_claims (path, tenant_id, job_id, created_at) "
                "VALUES (?, ?, ?, ?)",
                (path, tenant_id, job_id, time.time()),
            )
            return cur.rowcount == 1

    # ---- dataset cache ----------------------------------------------------------------------

    def cache_entry(self, tenant_id: str, uri: str, node_id: str) -> CacheEntry | None:
        """One cache entry."""
        row = self._db.execute(
            "SELECT * FROM cache_entries WHERE tenant_id = ? AND dataset_uri = ? AND node_id = ?",
            (tenant_id, uri, node_id),
        ).fetchone()
        return None if row is None else from_row(CacheEntry, row)

    def put_cache_entry(self, fields: Mapping[str, Any]) -> None:
        """Insert or replace a cache entry."""
        cols = ", ".join(fields)
        marks = ", ".join("?" for _ in fields)
        with self._tx() as db:
            db.execute(
                f"INSERT OR REPLACE INTO cache_entries ({cols}) VALUES ({marks})",
                tuple(fields.values()),
            )

    def touch_cache_entry(self, tenant_id: str, uri: str, node_id: str, now: float) -> None:
        """Record a hit."""
        with self._tx() as db:
            db.execute(
                "UPDATE cache_entries SET hit_count = hit_count + 1, last_accessed_at = ? "
                "WHERE tenant_id = ? AND dataset_uri = ? AND node_id = ?",
                (now, tenant_id, uri, node_id),
            )

    def delete_cache_entry(self, tenant_id: str, uri: str, node_id: str) -> None:
        """Forget an entry."""
        with self._tx() as db:
            db.execute(
                "DELETE FROM cache_entries WHERE tenant_id = ? AND dataset_uri = ? AND node_id = ?",
                (tenant_id, uri, node_id),
            )

    def cache_entries(
        self, tenant_id: str | None = None, node_id: str | None = None
    ) -> list[CacheEntry]:
        """Entries, least recently used first; filtered by tenant and node when given."""
        where, params = [], []
        if tenant_id is not None:
            where.append("tenant_id = ?")
            params.append(tenant_id)
        if node_id is not None:
            where.append("node_id = ?")
            params.append(node_id)
        sql = "SELECT * FROM cache_entries" + (" WHERE " + " AND ".join(where) if where else "")
        rows = self._db.execute(
            sql + " ORDER BY last_accessed_at ASC, cached_at ASC", tuple(params)
        ).fetchall()
        return [from_row(CacheEntry, r) for r in rows]

    def count_access(self, tenant_id: str, hit: bool) -> None:
        """Count a cache hit or miss of a tenant."""
        column = "hits" if hit else "misses"
        with self._tx() as db:
            db.execute(
                "INSERT INTO cache_stats (tenant_id, hits, misses) VALUES (?, 0, 0) "
                "ON CONFLICT (tenant_id) DO NOTHING",
                (tenant_id,),
            )
            db.execute(
                f"UPDATE cache_stats SET {column} = {column} + 1 WHERE tenant_id = ?", (tenant_id,)
            )

    def cache_stats(self, tenant_id: str) -> tuple[int, int]:
        """(hits, misses) of a tenant."""
        row = self._db.execute(
            "SELECT hits, misses FROM cache_stats WHERE tenant_id = ?", (tenant_id,)
        ).fetchone()
        return (0, 0) if row is None else (int(row["hits"]), int(row["misses"]))

    # ---- evaluations ------------------------------------------------------------------------

    def insert_evaluation(
        self,
        evaluation_id: str,
        tenant_id: str,
        job_id: str,
        request: bytes,
        model_path: str,
        statuses: Sequence[int],
    ) -> None:
        """An evaluation and one PENDING result row per benchmark."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO evaluations (evaluation_id, tenant_id, job_id, request, model_path, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (evaluation_id, tenant_id, job_id, request, model_path, time.time()),
            )
            db.executemany(
                "INSERT INTO benchmark_results (evaluation_id, position, status) VALUES (?, ?, ?)",
                [(evaluation_id, i, s) for i, s in enumerate(statuses)],
            )

    def evaluation(
        self, evaluation_id: str, tenant_id: str | None = None
    ) -> EvaluationRecord | None:
        """One evaluation; scoped to a tenant when given."""
        row = self._db.execute(
            "SELECT * FROM evaluations WHERE evaluation_id = ?", (evaluation_id,)
        ).fetchone()
        if row is None or (tenant_id is not None and row["tenant_id"] != tenant_id):
            return None
        return from_row(EvaluationRecord, row)

    def benchmark_results(self, evaluation_id: str) -> list[BenchmarkResult]:
        """Results in benchmark order."""
        rows = self._db.execute(
            "SELECT * FROM benchmark_results WHERE evaluation_id = ? ORDER BY position",
            (evaluation_id,),
        ).fetchall()
        return [from_row(BenchmarkResult, r) for r in rows]

    def set_benchmark_result(
        self,
        evaluation_id: str,
        position: int,
        status: int,
        score: float = 0.0,
        metrics: Mapping[str, float] | None = None,
        error: str = "",
    ) -> None:
        """Write one benchmark's state."""
        with self._tx() as db:
            db.execute(
                "UPDATE benchmark_results SET status = ?, score = ?, metrics = ?, error = ? "
                "WHERE evaluation_id = ? AND position = ?",
                (status, score, json.dumps(dict(metrics or {})), error, evaluation_id, position),
            )

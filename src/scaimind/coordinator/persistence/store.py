"""SQLite persistence of the reference coordinator: jobs, logs, metric points, checkpoints.

Every call is short and synchronous on the event loop's thread: the statements touch a handful of
rows through an index, so running them inline is cheaper than a thread hop, and it makes each
method atomic with respect to every other coroutine (no await happens inside a transaction).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from scaimind.coordinator.persistence.records import (
    CheckpointRecord,
    IdempotencyConflict,
    JobRecord,
    LogRecord,
    PendingLog,
    from_row,
)
from scaimind.coordinator.persistence.sqlite import open_database, transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    user_id TEXT NOT NULL DEFAULT '',
    name TEXT NOT NULL,
    job_type TEXT NOT NULL DEFAULT 'training',
    status INTEGER NOT NULL,
    status_message TEXT NOT NULL DEFAULT '',
    request BLOB NOT NULL,
    labels TEXT NOT NULL DEFAULT '{}',
    parent_job_id TEXT NOT NULL DEFAULT '',
    retry_count INTEGER NOT NULL DEFAULT 0,
    max_retries INTEGER NOT NULL DEFAULT 0,
    priority INTEGER NOT NULL,
    queue_name TEXT NOT NULL,
    preemptible INTEGER NOT NULL DEFAULT 0,
    gpu_type TEXT NOT NULL DEFAULT '',
    gpu_count INTEGER NOT NULL DEFAULT 0,
    num_nodes INTEGER NOT NULL DEFAULT 1,
    current_step INTEGER NOT NULL DEFAULT 0,
    total_steps INTEGER NOT NULL DEFAULT 0,
    current_epoch INTEGER NOT NULL DEFAULT 0,
    total_epochs INTEGER NOT NULL DEFAULT 0,
    latest_metrics TEXT NOT NULL DEFAULT '{}',
    assigned_nodes TEXT NOT NULL DEFAULT '[]',
    error_code TEXT NOT NULL DEFAULT '',
    error_message TEXT NOT NULL DEFAULT '',
    final_model_uri TEXT NOT NULL DEFAULT '',
    resume_checkpoint TEXT NOT NULL DEFAULT '',
    attempt INTEGER NOT NULL DEFAULT 0,
    pid INTEGER NOT NULL DEFAULT 0,
    pid_start TEXT NOT NULL DEFAULT '',
    run_id TEXT NOT NULL DEFAULT '',
    run_delivered INTEGER NOT NULL DEFAULT 0,
    start_after REAL NOT NULL DEFAULT 0,
    max_queue_wait REAL NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    queued_at REAL NOT NULL DEFAULT 0,
    started_at REAL NOT NULL DEFAULT 0,
    completed_at REAL NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_tenant_created ON jobs (tenant_id, created_at);
CREATE INDEX IF NOT EXISTS jobs_status_queue ON jobs (status, queue_name, priority, queued_at);
CREATE TABLE IF NOT EXISTS logs (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    level INTEGER NOT NULL,
    message TEXT NOT NULL,
    ts REAL NOT NULL,
    source TEXT NOT NULL,
    node_id TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS metric_points (
    job_id TEXT NOT NULL,
    name TEXT NOT NULL,
    step INTEGER NOT NULL,
    epoch INTEGER NOT NULL DEFAULT 0,
    value REAL NOT NULL,
    ts REAL NOT NULL,
    PRIMARY KEY (job_id, name, step)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS metric_points_step ON metric_points (job_id, step);
CREATE TABLE IF NOT EXISTS checkpoints (
    checkpoint_id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    path TEXT NOT NULL,
    size_bytes INTEGER NOT NULL DEFAULT 0,
    metrics TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS checkpoints_job ON checkpoints (job_id, step);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    tenant_id TEXT NOT NULL,
    key TEXT NOT NULL,
    job_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
CREATE TABLE IF NOT EXISTS nodes (
    node_id TEXT PRIMARY KEY,
    drained INTEGER NOT NULL DEFAULT 0,
    drain_reason TEXT NOT NULL DEFAULT '',
    updated_at REAL NOT NULL
);
"""

# Log entries kept in memory per job, and for how many jobs.
_RECENT_ENTRIES = 2000
_RECENT_JOBS = 256

# Columns ListJobs may order by; the page token remembers the last row's value of it.
ORDER_COLUMNS = ("created_at", "updated_at", "priority", "name", "status")


class Store:
    """All SQL of the coordinator."""

    def __init__(self, path: Path) -> None:
        self._db = open_database(path, _SCHEMA)
        _add_run_columns(self._db)
        self._last_seq: dict[str, int] = {}
        # The newest entries of recently active jobs, so log followers (possibly thousands per
        # job) read new lines from memory instead of one query each per notification.
        self._recent: OrderedDict[str, list[LogRecord]] = OrderedDict()
        self._unpublished: list[LogRecord] = []

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        try:
            with transaction(self._db) as db:
                yield db
        except BaseException:
            # Seq counters of the rolled-back entries are ahead of the database now.
            for record in self._unpublished:
                self._last_seq.pop(record.job_id, None)
            self._unpublished.clear()
            raise
        if self._unpublished:
            self._publish()

    def _publish(self) -> None:
        for record in self._unpublished:
            buf = self._recent.get(record.job_id)
            if buf is None:
                buf = self._recent[record.job_id] = []
                if len(self._recent) > _RECENT_JOBS:
                    self._recent.popitem(last=False)
            else:
                self._recent.move_to_end(record.job_id)
            buf.append(record)
            if len(buf) > 2 * _RECENT_ENTRIES:
                del buf[:_RECENT_ENTRIES]
        self._unpublished.clear()

    # ---- jobs -------------------------------------------------------------------------------

    def insert_job(
        self,
        fields: Mapping[str, Any],
        logs: Sequence[PendingLog],
        idempotency_key: str | None,
    ) -> None:
        """Insert a job and its idempotency key atomically; IdempotencyConflict on reuse."""
        cols = ", ".join(fields)
        marks = ", ".join("?" for _ in fields)
        with self._tx() as db:
            if idempotency_key:
                row = db.execute(
                    "SELECT job_id FROM idempotency_keys WHERE tenant_id = ? AND key = ?",
                    (fields["tenant_id"], idempotency_key),
                ).fetchone()
                if row is not None:
                    raise IdempotencyConflict(row["job_id"])
                db.execute(
                    "INSERT INTO idempotency_keys (tenant_id, key, job_id, created_at) "
                    "VALUES (?, ?, ?, ?)",
                    (fields["tenant_id"], idempotency_key, fields["job_id"], time.time()),
                )
            db.execute(f"INSERT INTO jobs ({cols}) VALUES ({marks})", tuple(fields.values()))
            self._append_logs_in_tx(db, str(fields["job_id"]), logs)

    def job_for_key(self, tenant_id: str, key: str) -> str | None:
        """The job an idempotency key created, if any."""
        row = self._db.execute(
            "SELECT job_id FROM idempotency_keys WHERE tenant_id = ? AND key = ?", (tenant_id, key)
        ).fetchone()
        return None if row is None else str(row["job_id"])

    def get_job(self, job_id: str, tenant_id: str | None = None) -> JobRecord | None:
        """One job; scoped to a tenant when given."""
        if tenant_id is None:
            row = self._db.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        else:
            row = self._db.execute(
                "SELECT * FROM jobs WHERE job_id = ? AND tenant_id = ?", (job_id, tenant_id)
            ).fetchone()
        return None if row is None else from_row(JobRecord, row)

    def job_status(self, job_id: str) -> int | None:
        """The status of a job, or None when it does not exist."""
        row = self._db.execute("SELECT status FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return None if row is None else int(row["status"])

    def transition(
        self,
        job_id: str,
        expected: Collection[int],
        new_status: int,
        fields: Mapping[str, Any] | None = None,
        logs: Sequence[PendingLog] = (),
    ) -> bool:
        """Compare-and-set the status; on success also write `fields` and `logs` atomically."""
        fields = dict(fields or {})
        sets = ", ".join(f"{k} = ?" for k in fields)
        now = time.time()
        sql = (
            "UPDATE jobs SET status = ?, updated_at = MAX(?, updated_at + 0.000001)"
            + (", " + sets if sets else "")
            + f" WHERE job_id = ? AND status IN ({', '.join('?' for _ in expected)})"
        )
        with self._tx() as db:
            cur = db.execute(sql, (new_status, now, *fields.values(), job_id, *expected))
            if cur.rowcount != 1:
                return False
            self._append_logs_in_tx(db, job_id, logs)
        return True

    def update_job(self, job_id: str, fields: Mapping[str, Any], bump: bool = True) -> None:
        """Write columns of a job without changing its status."""
        sets = ", ".join(f"{k} = ?" for k in fields)
        if bump:
            sets += ", updated_at = MAX(?, updated_at + 0.000001)"
        params: list[Any] = list(fields.values())
        if bump:
            params.append(time.time())
        with self._tx() as db:
            db.execute(f"UPDATE jobs SET {sets} WHERE job_id = ?", (*params, job_id))

    def jobs_in_status(self, statuses: Collection[int]) -> list[JobRecord]:
        """Jobs in any of the statuses, in queue order (priority desc, then FIFO)."""
        marks = ", ".join("?" for _ in statuses)
        rows = self._db.execute(
            f"SELECT * FROM jobs WHERE status IN ({marks}) "
            "ORDER BY priority DESC, queued_at ASC, created_at ASC, job_id ASC",
            tuple(statuses),
        ).fetchall()
        return [from_row(JobRecord, r) for r in rows]

    def queue_position(
        self, queue_name: str, priority: int, queued_at: float, job_id: str, queued: int
    ) -> int:
        """1-based position of a queued job in its queue."""
        row = self._db.execute(
            "SELECT COUNT(*) AS n FROM jobs WHERE status = ? AND queue_name = ? AND "
            "(priority > ? OR (priority = ? AND "
            "(queued_at < ? OR (queued_at = ? AND job_id < ?))))",
            (queued, queue_name, priority, priority, queued_at, queued_at, job_id),
        ).fetchone()
        return int(row["n"]) + 1

    def count_tenant_active(self, tenant_id: str, statuses: Collection[int]) -> int:
        """How many of a tenant's jobs are in any of the statuses."""
        marks = ", ".join("?" for _ in statuses)
        row = self._db.execute(
            f"SELECT COUNT(*) AS n FROM jobs WHERE tenant_id = ? AND status IN ({marks})",
            (tenant_id, *statuses),
        ).fetchone()
        return int(row["n"])

    def list_jobs(
        self,
        tenant_id: str,
        statuses: Collection[int],
        labels: Mapping[str, str],
        order_column: str,
        descending: bool,
        after: tuple[Any, str] | None,
        limit: int,
        *,
        job_type: str | None = None,
        parent_job_id: str | None = None,
    ) -> tuple[list[JobRecord], int]:
        """One keyset page of a tenant's jobs plus the total number of matches."""
        if order_column not in ORDER_COLUMNS:
            raise ValueError(order_column)
        where = ["tenant_id = ?"]
        params: list[Any] = [tenant_id]
        if job_type is not None:
            where.append("job_type = ?")
            params.append(job_type)
        if parent_job_id is not None:
            where.append("parent_job_id = ?")
            params.append(parent_job_id)
        if statuses:
            where.append(f"status IN ({', '.join('?' for _ in statuses)})")
            params.extend(statuses)
        for key, value in labels.items():
            where.append("json_extract(labels, ?) = ?")
            # A quoted key is a valid JSON path for any label key, dots and spaces included.
            params.extend(["$." + json.dumps(key), value])
        total = int(
            self._db.execute(
                f"SELECT COUNT(*) FROM jobs WHERE {' AND '.join(where)}", params
            ).fetchone()[0]
        )
        page_where = list(where)
        page_params = list(params)
        if after is not None:
            op = "<" if descending else ">"
            page_where.append(f"({order_column}, job_id) {op} (?, ?)")
            page_params.extend(after)
        direction = "DESC" if descending else "ASC"
        rows = self._db.execute(
            f"SELECT * FROM jobs WHERE {' AND '.join(page_where)} "
            f"ORDER BY {order_column} {direction}, job_id {direction} LIMIT ?",
            (*page_params, limit),
        ).fetchall()
        return [from_row(JobRecord, r) for r in rows], total

    def count_by_status(self) -> dict[int, int]:
        """Number of jobs per status, all tenants."""
        rows = self._db.execute("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status").fetchall()
        return {int(r["status"]): int(r["n"]) for r in rows}

    def recent_runtimes(self, completed: int, limit: int = 20) -> list[float]:
        """Run durations (seconds) of the most recently completed jobs."""
        rows = self._db.execute(
            "SELECT completed_at - started_at AS d FROM jobs WHERE status = ? AND started_at > 0 "
            "ORDER BY completed_at DESC LIMIT ?",
            (completed, limit),
        ).fetchall()
        return [float(r["d"]) for r in rows if r["d"] is not None and r["d"] > 0]

    # ---- logs -------------------------------------------------------------------------------

    def _append_logs_in_tx(
        self, db: sqlite3.Connection, job_id: str, logs: Sequence[PendingLog]
    ) -> None:
        if not logs:
            return
        seq = self._last_seq.get(job_id)
        if seq is None:
            row = db.execute("SELECT MAX(seq) FROM logs WHERE job_id = ?", (job_id,)).fetchone()
            seq = int(row[0] or 0)
        now = time.time()
        records = []
        for entry in logs:
            seq += 1
            records.append(
                LogRecord(
                    job_id,
                    seq,
                    entry.level,
                    entry.message,
                    entry.ts or now,
                    entry.source,
                    entry.node_id,
                )
            )
        db.executemany(
            "INSERT INTO logs (job_id, seq, level, message, ts, source, node_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(r.job_id, r.seq, r.level, r.message, r.ts, r.source, r.node_id) for r in records],
        )
        self._last_seq[job_id] = seq
        self._unpublished.extend(records)

    def append_logs(self, job_id: str, logs: Sequence[PendingLog]) -> None:
        """Persist log entries with the next seq numbers of the job."""
        if not logs:
            return
        with self._tx() as db:
            self._append_logs_in_tx(db, job_id, logs)

    def logs_after(
        self, job_id: str, after_seq: int, min_level: int, limit: int
    ) -> list[LogRecord]:
        """Entries with seq > after_seq at or above min_level, oldest first."""
        buf = self._recent.get(job_id)
        # Seqs in a buffer are contiguous, so it answers when it starts at or before after_seq+1.
        if buf and buf[0].seq <= after_seq + 1:
            start = max(after_seq + 1 - buf[0].seq, 0)
            out = []
            for record in buf[start:]:
                if record.level >= min_level:
                    out.append(record)
                    if len(out) >= limit:
                        break
            return out
        rows = self._db.execute(
            "SELECT * FROM logs WHERE job_id = ? AND seq > ? AND level >= ? ORDER BY seq LIMIT ?",
            (job_id, after_seq, min_level, limit),
        ).fetchall()
        return [_log(r) for r in rows]

    def logs_tail(self, job_id: str, count: int, min_level: int) -> list[LogRecord]:
        """The last `count` entries at or above min_level, oldest first."""
        rows = self._db.execute(
            "SELECT * FROM logs WHERE job_id = ? AND level >= ? ORDER BY seq DESC LIMIT ?",
            (job_id, min_level, count),
        ).fetchall()
        return [_log(r) for r in reversed(rows)]

    def last_seq(self, job_id: str) -> int:
        """The highest seq of a job's log (0 when empty)."""
        if job_id in self._last_seq:
            return self._last_seq[job_id]
        row = self._db.execute("SELECT MAX(seq) FROM logs WHERE job_id = ?", (job_id,)).fetchone()
        return int(row[0] or 0)

    # ---- metrics ----------------------------------------------------------------------------

    def add_metric_points(
        self, job_id: str, points: Sequence[tuple[int, int, str, float, float]]
    ) -> None:
        """Persist (step, epoch, name, value, ts) points; a re-run step replaces its old value."""
        with self._tx() as db:
            db.executemany(
                "INSERT OR REPLACE INTO metric_points (job_id, step, epoch, name, value, ts) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(job_id, *p) for p in points],
            )

    def metric_series(self, job_id: str) -> dict[str, list[tuple[int, float, float]]]:
        """All points per metric name as (step, value, ts), in step order."""
        out: dict[str, list[tuple[int, float, float]]] = {}
        for r in self._db.execute(
            "SELECT name, step, value, ts FROM metric_points WHERE job_id = ? ORDER BY name, step",
            (job_id,),
        ):
            out.setdefault(r["name"], []).append(
                (int(r["step"]), float(r["value"]), float(r["ts"]))
            )
        return out

    def latest_metric_step(self, job_id: str) -> int | None:
        """The highest step with metric points."""
        row = self._db.execute(
            "SELECT MAX(step) FROM metric_points WHERE job_id = ?", (job_id,)
        ).fetchone()
        return None if row[0] is None else int(row[0])

    def metrics_at(self, job_id: str, step: int) -> tuple[int, float, dict[str, float]]:
        """(epoch, timestamp, {name: value}) at one step."""
        rows = self._db.execute(
            "SELECT name, value, epoch, ts FROM metric_points WHERE job_id = ? AND step = ?",
            (job_id, step),
        ).fetchall()
        epoch = max((int(r["epoch"]) for r in rows), default=0)
        ts = max((float(r["ts"]) for r in rows), default=0.0)
        return epoch, ts, {r["name"]: float(r["value"]) for r in rows}

    # ---- checkpoints ------------------------------------------------------------------------

    def add_checkpoint(self, record: CheckpointRecord, keep_last: int) -> list[str]:
        """Record a checkpoint; returns paths of records dropped by keep_last."""
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO checkpoints "
                "(checkpoint_id, job_id, step, path, size_bytes, metrics, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    record.checkpoint_id,
                    record.job_id,
                    record.step,
                    record.path,
                    record.size_bytes,
                    json.dumps(record.metrics),
                    record.created_at,
                ),
            )
            dropped: list[str] = []
            if keep_last > 0:
                old = db.execute(
                    "SELECT checkpoint_id, path FROM checkpoints WHERE job_id = ? "
                    "ORDER BY step DESC LIMIT -1 OFFSET ?",
                    (record.job_id, keep_last),
                ).fetchall()
                for r in old:
                    db.execute(
                        "DELETE FROM checkpoints WHERE checkpoint_id = ?", (r["checkpoint_id"],)
                    )
                    dropped.append(str(r["path"]))
        return dropped

    def set_checkpoint_size(self, checkpoint_id: str, size_bytes: int) -> None:
        """Fill in a checkpoint's size measured after it was recorded."""
        with self._tx() as db:
            db.execute(
                "UPDATE checkpoints SET size_bytes = ? WHERE checkpoint_id = ?",
                (size_bytes, checkpoint_id),
            )

    def checkpoints(self, job_id: str) -> list[CheckpointRecord]:
        """A job's checkpoints in step order."""
        rows = self._db.execute(
            "SELECT * FROM checkpoints WHERE job_id = ? ORDER BY step", (job_id,)
        ).fetchall()
        return [_checkpoint(r) for r in rows]

    def checkpoint(self, checkpoint_id: str) -> CheckpointRecord | None:
        """One checkpoint by id."""
        row = self._db.execute(
            "SELECT * FROM checkpoints WHERE checkpoint_id = ?", (checkpoint_id,)
        ).fetchone()
        return None if row is None else _checkpoint(row)

    # ---- nodes ------------------------------------------------------------------------------

    def node_states(self) -> dict[str, tuple[bool, str]]:
        """node_id -> (drained, reason)."""
        rows = self._db.execute("SELECT node_id, drained, drain_reason FROM nodes").fetchall()
        return {r["node_id"]: (bool(r["drained"]), str(r["drain_reason"])) for r in rows}

    def set_node_state(self, node_id: str, drained: bool, reason: str) -> None:
        """Persist a node's drain flag."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO nodes (node_id, drained, drain_reason, updated_at) "
                "VALUES (?, ?, ?, ?) "
                "ON CONFLICT (node_id) DO UPDATE SET drained = excluded.drained, "
                "drain_reason = excluded.drain_reason, updated_at = excluded.updated_at",
                (node_id, int(drained), reason, time.time()),
            )


def _add_run_columns(db: sqlite3.Connection) -> None:
    """Databases of coordinators before the executor interface: the attempt's run id (and how
    much of its output was delivered) replace `pid`/`pid_start`, which stay unused."""
    columns = {r["name"] for r in db.execute("PRAGMA table_info(jobs)")}
    if "run_id" in columns:
        return
    with transaction(db):
        db.execute("ALTER TABLE jobs ADD COLUMN run_id TEXT NOT NULL DEFAULT ''")
        db.execute("ALTER TABLE jobs ADD COLUMN run_delivered INTEGER NOT NULL DEFAULT 0")
        # A process of the previous coordinator is still found (and killed) at recovery.
        db.execute(
            "UPDATE jobs SET run_id = 'local:' || pid || ':' || pid_start "
            "WHERE pid > 0 AND pid_start != ''"
        )


def _log(r: sqlite3.Row) -> LogRecord:
    return LogRecord(
        job_id=r["job_id"],
        seq=int(r["seq"]),
        level=int(r["level"]),
        message=r["message"],
        ts=float(r["ts"]),
        source=r["source"],
        node_id=r["node_id"],
    )


def _checkpoint(r: sqlite3.Row) -> CheckpointRecord:
    return CheckpointRecord(
        checkpoint_id=r["checkpoint_id"],
        job_id=r["job_id"],
        step=int(r["step"]),
        path=r["path"],
        size_bytes=int(r["size_bytes"]),
        metrics={k: float(v) for k, v in json.loads(r["metrics"]).items()},
        created_at=float(r["created_at"]),
    )

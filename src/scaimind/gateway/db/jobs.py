"""Write side of the job cache: monotonic dialect-native upserts and best-effort background sync."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import pickle
import re
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from prometheus_client import REGISTRY, CollectorRegistry, Counter
from sqlalchemy import and_, case, literal_column, or_
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.elements import ColumnElement

from scaimind.gateway.backend.convert import finite
from scaimind.gateway.db.engine import is_transient
from scaimind.gateway.db.models import Base, CachedJobRow

logger = logging.getLogger("scaimind.gateway.db")

SYNC_FAILED_EVENT = "scaimind_cache_sync_failed"
SYNC_FAILURES_METRIC = "scaimind_cache_sync_failures_total"

_TABLE = Base.metadata.tables[CachedJobRow.__tablename__]
# job_id is the conflict target and tenant_id never changes hands; everything else follows the
# newest snapshot. raw_view and updated_at must stay LAST, in this order: MySQL evaluates ON
# DUPLICATE KEY assignments in order, and the later IF()s compare against the row's (possibly
# already updated) raw_view and updated_at; assigned in this order the condition keeps its value.
_LAST_COLUMNS = ("raw_view", "updated_at")
_UPDATED_COLUMNS = (
    *(c.name for c in _TABLE.columns if c.name not in ("job_id", "tenant_id", *_LAST_COLUMNS)),
    *_LAST_COLUMNS,
)
# What `raw` holds (the cache's raw_view column): the full job, or the BASIC view of a listing.
FULL = "FULL"
BASIC = "BASIC"
# Bound parameters per statement stay far below asyncpg's 32767 and SQLite's 32766 limits.
_ROWS_PER_STATEMENT = 500
_DEADLOCK_RETRIES = 3

_counters: weakref.WeakKeyDictionary[CollectorRegistry, Counter] = weakref.WeakKeyDictionary()


def sync_failures_counter(registry: CollectorRegistry | None = None) -> Counter:
    """The sync-failure counter on ``registry`` (default: the global one), created on first use."""
    registry = REGISTRY if registry is None else registry
    counter = _counters.get(registry)
    if counter is None:
        counter = Counter(
            SYNC_FAILURES_METRIC,
            "Best-effort job cache syncs that failed (the response was unaffected).",
            registry=registry,
        )
        _counters[registry] = counter
    return counter


def parse_timestamp(value: Any) -> datetime | None:
    """Parse an RFC 3339 string (or datetime) into an aware UTC datetime; empty means None."""
    if value is None or value == "":
        return None
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _text(value: Any, limit: int) -> str | None:
    # The coordinator sends "" for unset proto strings; the cache stores NULL for those.
    if value is None or value == "":
        return None
    return str(value)[:limit]


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def job_row(
    tenant_id: str, job: Mapping[str, Any], synced_at: datetime, view: str = FULL
) -> dict[str, Any]:
    """Flatten a gateway Job dict (in `view`, FULL or BASIC) into a `mod_scaimind_jobs` row."""
    training = _mapping(job.get("training_config"))
    scheduling = _mapping(job.get("scheduling_config"))
    labels = {str(k): str(v) for k, v in _mapping(job.get("labels")).items()}
    updated_at = parse_timestamp(job.get("updated_at"))
    created_at = parse_timestamp(job.get("created_at")) or updated_at or synced_at
    return {
        "job_id": str(job["job_id"]),
        "tenant_id": tenant_id,
        "name": str(job.get("name") or "")[:256],
        "status": str(job.get("status") or "PENDING")[:32],
        "user_id": _text(job.get("user_id"), 128),
        "training_type": _text(training.get("training_type"), 32),
        "framework_type": _text(_mapping(training.get("framework")).get("type"), 32),
        "base_model_id": _text(_mapping(training.get("base_model")).get("model_id"), 512),
        "priority": _int(training.get("priority")),
        "queue_name": _text(job.get("queue_name") or scheduling.get("queue_name"), 128),
        "parent_job_id": _text(job.get("parent_job_id"), 128),
        "job_type": "evaluation" if labels.get("type") == "evaluation" else "training",
        "labels": labels,
        "created_at": created_at,
        "started_at": parse_timestamp(job.get("started_at")),
        "completed_at": parse_timestamp(job.get("completed_at")),
        "updated_at": updated_at,
        "raw": dict(job),
        "synced_at": synced_at,
        "raw_view": view,
    }


def _view_of(job: Mapping[str, Any], view: str) -> str:
    # A summary of a job without checkpoints lacks nothing: it is the full job.
    if view == BASIC and len(job.get("checkpoints") or ()) == (job.get("checkpoint_count") or 0):
        return FULL
    return view


def _newest_per_job(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # One statement may not touch a row twice (PostgreSQL refuses), so keep the newest snapshot.
    newest: dict[str, dict[str, Any]] = {}
    floor = datetime.min.replace(tzinfo=UTC)
    for row in rows:
        seen = newest.get(row["job_id"])
        if seen is None or (row["updated_at"] or floor, row["raw_view"] == FULL) >= (
            seen["updated_at"] or floor,
            seen["raw_view"] == FULL,
        ):
            newest[row["job_id"]] = row
    # A fixed lock order across writers avoids deadlocks between overlapping batches.
    return [newest[job_id] for job_id in sorted(newest)]


def _replaces(incoming: Any) -> ColumnElement[bool]:
    """When the `incoming` snapshot replaces the stored row of the same job.

    The same tenant's, and newer by the coordinator's updated_at; at the same updated_at it
    replaces the row unless that would put a summary (BASIC) in place of the full job: a listing
    never takes away the checkpoint list GET /jobs/{id} stored for the same state. A NULL
    raw_view is a row from before views, which was FULL.
    """
    table = _TABLE
    # Constants as SQL literals, not bound parameters: aiomysql's executemany rewrites the
    # VALUES clause and allows no parameters after it (in ON DUPLICATE KEY UPDATE).
    full: ColumnElement[str] = literal_column(f"'{FULL}'")
    basic: ColumnElement[str] = literal_column(f"'{BASIC}'")
    return and_(
        table.c.tenant_id == incoming.tenant_id,
        or_(
            table.c.updated_at.is_(None),
            incoming.updated_at > table.c.updated_at,
            and_(
                incoming.updated_at == table.c.updated_at,
                or_(incoming.raw_view == full, table.c.raw_view == basic),
            ),
        ),
    )


@functools.cache
def upsert_statement(dialect_name: str) -> Insert:
    """An executemany INSERT that only ever moves a same-tenant row forward (see `_replaces`).

    One statement object per dialect, executed with a list of rows: compiled once and cached,
    where a multi-VALUES statement built per batch spent most of a sync in the SQL compiler.
    """
    table = _TABLE
    if dialect_name in ("postgresql", "sqlite"):
        insert = postgresql.insert if dialect_name == "postgresql" else sqlite.insert
        stmt = insert(table)
        excluded = stmt.excluded
        return stmt.on_conflict_do_update(
            index_elements=[table.c.job_id],
            set_={name: excluded[name] for name in _UPDATED_COLUMNS},
            where=_replaces(excluded),
        )
    if dialect_name in ("mysql", "mariadb"):
        mstmt = mysql.insert(table)
        inserted = mstmt.inserted
        # Evaluated before every assignment; raw_view and updated_at are assigned last (see
        # _UPDATED_COLUMNS), which leaves the condition's value unchanged for the later ones.
        newer = _replaces(inserted)
        return mstmt.on_duplicate_key_update(
            [
                (name, case((newer, inserted[name]), else_=table.c[name]))
                for name in _UPDATED_COLUMNS
            ]
        )
    raise NotImplementedError(f"job cache upserts are not implemented for {dialect_name}")


# A non-finite double pickles as BINFLOAT ("G") + big-endian IEEE 754 with all exponent bits
# set: first byte 0x7f/0xff, high nibble of the second 0xf. Every float is pickled that way, so
# no match means no NaN/Infinity; a rare false match (string bytes) only costs a sanitising pass.
_NON_FINITE_FLOAT = re.compile(rb"G[\x7f\xff][\xf0-\xff]")
# Jobs fingerprinted between two yields to the event loop.
_JOBS_PER_SLICE = 25


def _fingerprint(job: Mapping[str, Any]) -> tuple[bytes, bool]:
    """A content digest of the job and whether it may hold non-finite floats.

    Equal pickles mean equal content, so an equal digest never hides a change; a different key
    order merely costs a redundant write. Pickling is ~2.5x cheaper than canonical JSON, and
    dashboards re-list mostly unchanged jobs, so this is most of a sync's CPU on the loop.
    """
    try:
        data = pickle.dumps(job, protocol=5)
    except Exception:
        # Not picklable (never from the gateway): canonical JSON still identifies the content.
        text = json.dumps(job, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.blake2b(text.encode(), digest_size=16).digest(), True
    digest = hashlib.blake2b(data, digest_size=16).digest()
    return digest, _NON_FINITE_FLOAT.search(data) is not None


def _finite(job: Mapping[str, Any]) -> Mapping[str, Any]:
    """The job with non-finite floats nulled (a copy only when it has any)."""
    try:
        json.dumps(job, allow_nan=False, default=str)
    except ValueError:
        # NaN/Infinity (a diverged loss in latest_metrics) are not JSON: PostgreSQL's jsonb
        # and MariaDB's JSON_VALID reject them, which would fail the whole batch.
        return cast(Mapping[str, Any], finite(job))
    return job


class JobCache:
    """Writes coordinator job snapshots into `mod_scaimind_jobs`."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        sync_timeout: float = 2.0,
        max_pending: int = 256,
        memo_size: int = 100_000,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._engine = engine
        self._sync_timeout = sync_timeout
        self._max_pending = max_pending
        self._failures = sync_failures_counter(registry)
        self._tasks: set[asyncio.Task[bool]] = set()
        self._closed = False
        self._memo_size = memo_size
        # (tenant_id, job_id) -> digest of the last snapshot this process committed.
        self._written: OrderedDict[tuple[str, str], bytes] = OrderedDict()

    @property
    def engine(self) -> AsyncEngine:
        """The engine this cache writes through."""
        return self._engine

    async def upsert(
        self, tenant_id: str, jobs: Sequence[Mapping[str, Any]], view: str = FULL
    ) -> None:
        """Insert or move forward the given jobs of ``tenant_id``; raises on database errors.

        ``view`` says what the dicts are: FULL jobs (GET /jobs/{id}) or BASIC ones (a listing,
        without the checkpoint list); a BASIC one never replaces a FULL one of the same
        updated_at.
        """
        synced_at = datetime.now(UTC)
        rows: list[dict[str, Any]] = []
        digests: dict[str, bytes] = {}
        for index, job in enumerate(jobs):
            if index and index % _JOBS_PER_SLICE == 0:
                # Let requests that arrived meanwhile run between slices of CPU work.
                await asyncio.sleep(0)
            owner = job.get("tenant_id")
            if owner and owner != tenant_id:
                # A job dict claiming another tenant is never written under this one.
                logger.warning(
                    "skipping job %s of tenant %s in a sync for tenant %s",
                    job.get("job_id"),
                    owner,
                    tenant_id,
                    extra={"event": "scaimind_cache_tenant_mismatch", "tenant_id": tenant_id},
                )
                continue
            if not job.get("job_id"):
                continue
            digest, maybe_non_finite = _fingerprint(job)
            job_id = str(job["job_id"])
            if self._written.get((tenant_id, job_id)) == digest:
                # Dashboards re-list mostly unchanged jobs; this exact snapshot is stored.
                continue
            if maybe_non_finite:
                job = _finite(job)
            digests[job_id] = digest
            rows.append(job_row(tenant_id, job, synced_at, _view_of(job, view)))
        rows = _newest_per_job(rows)
        if not rows:
            return
        statement = upsert_statement(self._engine.dialect.name)
        for attempt in range(_DEADLOCK_RETRIES):
            try:
                async with self._engine.begin() as conn:
                    for start in range(0, len(rows), _ROWS_PER_STATEMENT):
                        await conn.execute(statement, rows[start : start + _ROWS_PER_STATEMENT])
                break
            except DBAPIError as exc:
                if attempt + 1 == _DEADLOCK_RETRIES or not is_transient(exc):
                    raise
        for row in rows:
            self._remember((tenant_id, row["job_id"]), digests[row["job_id"]])

    def _remember(self, key: tuple[str, str], digest: bytes) -> None:
        # Only after a commit: the snapshot (or a newer one) is then in the table.
        self._written[key] = digest
        self._written.move_to_end(key)
        if len(self._written) > self._memo_size:
            self._written.popitem(last=False)

    async def sync(
        self, tenant_id: str, jobs: Sequence[Mapping[str, Any]], view: str = FULL
    ) -> bool:
        """Upsert with a deadline, never raising; False (logged and counted) when it failed."""
        try:
            # Start with a yield: the triggering response (and anything else ready) goes out
            # before the first CPU work of the sync.
            await asyncio.sleep(0)
            async with asyncio.timeout(self._sync_timeout):
                await self.upsert(tenant_id, jobs, view)
        except Exception as exc:
            self._record_failure(tenant_id, len(jobs), exc)
            return False
        return True

    def schedule_sync(
        self, tenant_id: str, jobs: Sequence[Mapping[str, Any]], view: str = FULL
    ) -> asyncio.Task[bool] | None:
        """Start ``sync`` in the background (tracked for ``drain``); None when it was dropped."""
        if self._closed or not jobs:
            return None
        if len(self._tasks) >= self._max_pending:
            # A slow database must not turn into unbounded memory growth in the gateway.
            self._record_failure(tenant_id, len(jobs), RuntimeError("sync backlog full"))
            return None
        task = asyncio.create_task(
            self.sync(tenant_id, list(jobs), view), name="scaimind-cache-sync"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def pending(self) -> int:
        """Background syncs not finished yet."""
        return len(self._tasks)

    async def drain(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Wait for the background syncs started so far (at most ``timeout`` seconds)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    async def close(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Stop accepting syncs, wait for running ones, cancel what is left after ``timeout``."""
        self._closed = True
        await self.drain(timeout)
        leftovers = set(self._tasks)
        for task in leftovers:
            task.cancel()
        if leftovers:
            await asyncio.gather(*leftovers, return_exceptions=True)

    def _record_failure(self, tenant_id: str, count: int, exc: BaseException) -> None:
        self._failures.inc()
        logger.warning(
            "job cache sync failed for tenant %s (%d jobs): %s",
            tenant_id,
            count,
            type(exc).__name__,
            extra={
                "event": SYNC_FAILED_EVENT,
                "tenant_id": tenant_id,
                "job_count": count,
                "error": repr(exc)[:500],
            },
        )

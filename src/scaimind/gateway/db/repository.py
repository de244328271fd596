"""Read side of the job cache: tenant-scoped queries for ScaiGrid dashboards."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.elements import ColumnElement

from scaimind.gateway.db.jobs import parse_timestamp
from scaimind.gateway.db.models import Base, CachedJobRow

MAX_PAGE_SIZE = 1000

_TABLE = Base.metadata.tables[CachedJobRow.__tablename__]
_COLUMNS = _TABLE.c


class InvalidCursorError(ValueError):
    """The cursor was not produced by this repository."""


@dataclass(frozen=True, slots=True)
class CachedJob:
    """One cached job: the filterable columns plus the coordinator's Job dict in `raw_view`."""

    job_id: str
    tenant_id: str
    name: str
    status: str
    user_id: str | None
    training_type: str | None
    framework_type: str | None
    base_model_id: str | None
    priority: int | None
    queue_name: str | None
    parent_job_id: str | None
    job_type: str
    labels: dict[str, str]
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    updated_at: datetime | None
    raw: dict[str, Any]
    synced_at: datetime
    raw_view: str | None

    @classmethod
    def from_row(cls, row: RowMapping) -> CachedJob:
        """Build from a `mod_scaimind_jobs` row."""
        return cls(**{name: row[name] for name in _COLUMNS.keys()})  # noqa: SIM118


@dataclass(frozen=True, slots=True)
class Page:
    """A page of jobs, newest first; ``next_cursor`` is None on the last page."""

    items: list[CachedJob]
    next_cursor: str | None


def encode_cursor(created_at: datetime, job_id: str) -> str:
    """Opaque cursor pointing just after (created_at, job_id) in newest-first order."""
    raw = json.dumps([created_at.isoformat(), job_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Inverse of ``encode_cursor``; InvalidCursorError for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, job_id = json.loads(raw)
        created_at = parse_timestamp(created)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise InvalidCursorError("invalid cursor") from exc
    if created_at is None or not isinstance(job_id, str):
        raise InvalidCursorError("invalid cursor")
    return created_at, job_id


class JobRepository:
    """Tenant-scoped reads of `mod_scaimind_jobs`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def list_jobs(
        self,
        tenant_id: str,
        *,
        statuses: Iterable[str] | None = None,
        labels: Mapping[str, str] | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        job_type: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        """Tenant jobs newest first; empty filters match all, ``created_to`` is exclusive."""
        limit = max(1, min(limit, MAX_PAGE_SIZE))
        conditions: list[ColumnElement[bool]] = [_COLUMNS.tenant_id == tenant_id]
        status_list = list(statuses or ())
        if status_list:
            conditions.append(_COLUMNS.status.in_(status_list))
        for key, value in (labels or {}).items():
            # ->> on PostgreSQL, JSON_EXTRACT on SQLite, JSON_UNQUOTE(JSON_EXTRACT()) on MariaDB.
            conditions.append(_COLUMNS.labels[key].as_string() == value)
        if created_from is not None:
            conditions.append(_COLUMNS.created_at >= created_from)
        if created_to is not None:
            conditions.append(_COLUMNS.created_at < created_to)
        if job_type is not None:
            conditions.append(_COLUMNS.job_type == job_type)
        if cursor is not None:
            after_created, after_id = decode_cursor(cursor)
            # The leading `<=` is a plain range on the (tenant_id, created_at, job_id) index on
            # every dialect; row-value comparisons are not optimised everywhere (MariaDB).
            conditions.append(_COLUMNS.created_at <= after_created)
            conditions.append(
                or_(
                    _COLUMNS.created_at < after_created,
                    and_(_COLUMNS.created_at == after_created, _COLUMNS.job_id < after_id),
                )
            )
        query = (
            select(_TABLE)
            .where(*conditions)
            .order_by(_COLUMNS.created_at.desc(), _COLUMNS.job_id.desc())
            .limit(limit + 1)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        items = [CachedJob.from_row(row) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = items[-1]
            next_cursor = encode_cursor(last.created_at, last.job_id)
        return Page(items=items, next_cursor=next_cursor)

    async def get(self, tenant_id: str, job_id: str) -> CachedJob | None:
        """One cached job of the tenant, or None (also for another tenant's job)."""
        query = select(_TABLE).where(_COLUMNS.tenant_id == tenant_id, _COLUMNS.job_id == job_id)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return None if row is None else CachedJob.from_row(row)

    async def count_by_status(self, tenant_id: str) -> dict[str, int]:
        """Number of cached jobs of the tenant per status (absent statuses are omitted)."""
        query = (
            select(_COLUMNS.status, func.count())
            .where(_COLUMNS.tenant_id == tenant_id)
            .group_by(_COLUMNS.status)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {status: int(count) for status, count in rows}

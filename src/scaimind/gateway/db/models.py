"""SQLAlchemy models of the job cache, the idempotency ledger and the API keys."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    String,
    UniqueConstraint,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator, TypeEngine

# Deterministic constraint names keep alembic diffs and MySQL's 64-char limit under control.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# ScaiGrid's own MariaDB database already has an `alembic_version` table; ours must not clash.
VERSION_TABLE = "mod_scaimind_alembic_version"

# JSONB on PostgreSQL so label filters can use containment and GIN indexes later.
JSONType = JSON().with_variant(JSONB(), "postgresql")
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware datetime on every dialect; stored as naive UTC where tz is unsupported."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            # Microseconds matter: updated_at ordering decides which snapshot wins.
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        value = value.astimezone(UTC)
        # SQLite and MariaDB have no zone: store UTC wall time, re-attach UTC on read.
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base carrying the naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class CachedJobRow(Base):
    """One coordinator job as last seen by the gateway, scoped by tenant."""

    __tablename__ = "mod_scaimind_jobs"

    job_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[str | None] = mapped_column(String(128))
    training_type: Mapped[str | None] = mapped_column(String(32))
    framework_type: Mapped[str | None] = mapped_column(String(32))
    base_model_id: Mapped[str | None] = mapped_column(String(512))
    priority: Mapped[int | None] = mapped_column(Integer)
    queue_name: Mapped[str | None] = mapped_column(String(128))
    parent_job_id: Mapped[str | None] = mapped_column(String(128))
    job_type: Mapped[str] = mapped_column(String(16))
    labels: Mapped[dict[str, str]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    raw: Mapped[dict[str, Any]] = mapped_column(JSONType)
    synced_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Which view of the job `raw` is: "FULL" (GET /jobs/{id}: every checkpoint) or "BASIC" (a
    # listing: no checkpoint list, latest_checkpoint and checkpoint_count). NULL: written before
    # views existed, when raw was always FULL.
    raw_view: Mapped[str | None] = mapped_column(String(8))

    __table_args__ = (
        CheckConstraint("job_type IN ('training', 'evaluation')", name="job_type"),
        Index(None, "tenant_id", "status", "created_at"),
        # Cursor paging walks (created_at, job_id) backwards inside one tenant.
        Index(None, "tenant_id", "created_at", "job_id"),
    )


class IdempotencyRecord(Base):
    """One claimed Idempotency-Key and, once completed, the response to replay."""

    __tablename__ = "mod_scaimind_idempotency"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(128))
    route: Mapped[str] = mapped_column(String(128))
    key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    status_code: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[Any | None] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        # The only arbiter between concurrent duplicates: claims are INSERTs that may fail here.
        UniqueConstraint("tenant_id", "route", "key"),
        CheckConstraint("state IN ('in_progress', 'completed')", name="state"),
        Index(None, "expires_at"),
    )


class ApiKeyRow(Base):
    """One `sgk_…` API key: who it acts as, its lifetime, and only the SHA-256 of the secret."""

    __tablename__ = "mod_scaimind_api_keys"

    # Public handle for listing and revoking; unrelated to the secret so it reveals nothing.
    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    tenant_id: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(String(1024))
    name: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        # Verification looks keys up by hash: the digest of a guess either exists or it does not.
        UniqueConstraint("key_hash"),
        Index(None, "tenant_id", "created_at"),
    )

"""Job cache and idempotency ledger.

Revision ID: 0001
Revises:
Create Date: 2026-11-30 01:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the model types: migrations must not change when the models do.
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create mod_scaimind_jobs and mod_scaimind_idempotency."""
    op.create_table(
        "mod_scaimind_jobs",
        sa.Column("job_id", sa.String(128), nullable=False),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=True),
        sa.Column("training_type", sa.String(32), nullable=True),
        sa.Column("framework_type", sa.String(32), nullable=True),
        sa.Column("base_model_id", sa.String(512), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=True),
        sa.Column("queue_name", sa.String(128), nullable=True),
        sa.Column("parent_job_id", sa.String(128), nullable=True),
        sa.Column("job_type", sa.String(16), nullable=False),
        sa.Column("labels", JSON, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=True),
        sa.Column("completed_at", TIMESTAMP, nullable=True),
        sa.Column("updated_at", TIMESTAMP, nullable=True),
        sa.Column("raw", JSON, nullable=False),
        sa.Column("synced_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("job_id", name="pk_mod_scaimind_jobs"),
        sa.CheckConstraint(
            "job_type IN ('training', 'evaluation')", name="ck_mod_scaimind_jobs_job_type"
        ),
    )
    op.create_index(
        "ix_mod_scaimind_jobs_tenant_id_status_created_at",
        "mod_scaimind_jobs",
        ["tenant_id", "status", "created_at"],
    )
    op.create_index(
        "ix_mod_scaimind_jobs_tenant_id_created_at_job_id",
        "mod_scaimind_jobs",
        ["tenant_id", "created_at", "job_id"],
    )
    op.create_table(
        "mod_scaimind_idempotency",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("route", sa.String(128), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("response_body", JSON, nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_mod_scaimind_idempotency"),
        sa.UniqueConstraint(
            "tenant_id", "route", "key", name="uq_mod_scaimind_idempotency_tenant_id_route_key"
        ),
        sa.CheckConstraint(
            "state IN ('in_progress', 'completed')", name="ck_mod_scaimind_idempotency_state"
        ),
    )
    op.create_index(
        "ix_mod_scaimind_idempotency_expires_at", "mod_scaimind_idempotency", ["expires_at"]
    )


def downgrade() -> None:
    """Drop both tables."""
    op.drop_index("ix_mod_scaimind_idempotency_expires_at", table_name="mod_scaimind_idempotency")
    op.drop_table("mod_scaimind_idempotency")
    op.drop_index(
        "ix_mod_scaimind_jobs_tenant_id_created_at_job_id", table_name="mod_scaimind_jobs"
    )
    op.drop_index(
        "ix_mod_scaimind_jobs_tenant_id_status_created_at", table_name="mod_scaimind_jobs"
    )
    op.drop_table("mod_scaimind_jobs")

"""API keys (sgk_…), stored as SHA-256 hashes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 01:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copy of the model type: migrations must not change when the models do.
TIMESTAMP = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    """Create mod_scaimind_api_keys."""
    op.create_table(
        "mod_scaimind_api_keys",
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("role", sa.String(64), nullable=False),
        sa.Column("scope", sa.String(1024), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=True),
        sa.Column("revoked_at", TIMESTAMP, nullable=True),
        sa.Column("last_used_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("key_id", name="pk_mod_scaimind_api_keys"),
        sa.UniqueConstraint("key_hash", name="uq_mod_scaimind_api_keys_key_hash"),
    )
    op.create_index(
        "ix_mod_scaimind_api_keys_tenant_id_created_at",
        "mod_scaimind_api_keys",
        ["tenant_id", "created_at"],
    )


def downgrade() -> None:
    """Drop mod_scaimind_api_keys."""
    op.drop_index(
        "ix_mod_scaimind_api_keys_tenant_id_created_at", table_name="mod_scaimind_api_keys"
    )
    op.drop_table("mod_scaimind_api_keys")

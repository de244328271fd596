"""Which view of the job the cache's `raw` holds: FULL (every checkpoint) or BASIC (a summary).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add mod_scaimind_jobs.raw_view (NULL for rows written before: they were FULL)."""
    with op.batch_alter_table("mod_scaimind_jobs") as batch:
        batch.add_column(sa.Column("raw_view", sa.String(8), nullable=True))


def downgrade() -> None:
    """Drop mod_scaimind_jobs.raw_view."""
    with op.batch_alter_table("mod_scaimind_jobs") as batch:
        batch.drop_column("raw_view")

"""delivery priority: deliveries an opt-out rule marks at receipt are claimed first

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-24 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        # Every delivery stored before this revision is ordinary.
        batch_op.add_column(
            sa.Column("priority", sa.SmallInteger(), server_default=sa.text("0"), nullable=False)
        )
        batch_op.create_index(
            "ix_deliveries_urgent",
            ["next_attempt_at", "id"],
            unique=False,
            sqlite_where=sa.text("status = 'queued' AND priority > 0"),
            postgresql_where=sa.text("status = 'queued' AND priority > 0"),
        )


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_urgent")
        batch_op.drop_column("priority")

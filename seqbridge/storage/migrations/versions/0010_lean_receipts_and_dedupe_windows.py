"""receipts audited by the worker, and dedupe windows for body-hash keys

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-23 06:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import seqbridge.storage.types

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        # Every delivery stored before this revision had its receipt audited when it arrived.
        batch_op.add_column(
            sa.Column("receipt_audited", sa.Boolean(), server_default=sa.true(), nullable=False)
        )
        batch_op.create_index(
            "ix_deliveries_unaudited",
            ["id"],
            unique=False,
            sqlite_where=sa.text("receipt_audited = 0 AND status IN ('ignored', 'rejected')"),
            postgresql_where=sa.text("NOT receipt_audited AND status IN ('ignored', 'rejected')"),
        )
    with op.batch_alter_table("delivery_keys", schema=None) as batch_op:
        # Keys stored before this revision keep today's rule: kept as long as their delivery.
        batch_op.add_column(sa.Column("expires_at", seqbridge.storage.types.UTCDateTime(), nullable=True))
        batch_op.create_index("ix_delivery_keys_delivery", ["delivery_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("delivery_keys", schema=None) as batch_op:
        batch_op.drop_index("ix_delivery_keys_delivery")
        batch_op.drop_column("expires_at")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_unaudited")
        batch_op.drop_column("receipt_audited")

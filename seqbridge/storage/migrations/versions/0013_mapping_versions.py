"""mapping versions: the text of every mapping file the server loaded; a hook's deliveries
indexed down to their id (a mapping diff pages through them by (received_at, id))

Revision ID: 0013
Revises: 0011
Create Date: 2026-11-23 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import seqbridge.storage.types

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mapping_versions",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("file", sa.String(length=255), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column(
            "hooks",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("loaded_at", seqbridge.storage.types.UTCDateTime(), nullable=False),
        sa.Column("loaded_by", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mapping_versions")),
    )
    with op.batch_alter_table("mapping_versions", schema=None) as batch_op:
        batch_op.create_index("ix_mapping_versions_file", ["file", "id"], unique=False)
    # Without id, PostgreSQL sorts every remaining row of the hook for each page of a diff.
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_org_hook_received")
        batch_op.create_index(
            "ix_deliveries_org_hook_received_id", ["org_id", "hook", "received_at", "id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_org_hook_received_id")
        batch_op.create_index(
            "ix_deliveries_org_hook_received", ["org_id", "hook", "received_at"], unique=False
        )
    with op.batch_alter_table("mapping_versions", schema=None) as batch_op:
        batch_op.drop_index("ix_mapping_versions_file")
    op.drop_table("mapping_versions")

"""Filter bulk-enroll passes: where the same body's next page starts

Revision ID: 0011
Revises: 0008
Create Date: 2026-12-02 06:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import seqbridge.storage.types

revision = "0011"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bulk_enroll_passes",
        sa.Column("sequence_id", sa.String(length=36), nullable=False),
        sa.Column("pass_key", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.String(length=36), nullable=False),
        sa.Column("after_contact_id", sa.String(length=36), nullable=True),
        sa.Column("updated_at", seqbridge.storage.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_bulk_enroll_passes_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["sequence_id"],
            ["sequences.id"],
            name=op.f("fk_bulk_enroll_passes_sequence_id_sequences"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("sequence_id", "pass_key", name=op.f("pk_bulk_enroll_passes")),
    )


def downgrade() -> None:
    op.drop_table("bulk_enroll_passes")

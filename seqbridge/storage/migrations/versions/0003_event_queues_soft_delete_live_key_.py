"""event queues: soft delete, live key, filter indexes

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 04:30:04.766234
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import seqbridge.storage.types

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("companies", schema=None) as batch_op:
        batch_op.create_index("ix_companies_org_city", ["org_id", "city"], unique=False)
        batch_op.create_index("ix_companies_org_country_state", ["org_id", "country", "state"], unique=False)

    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.create_index("ix_contacts_org_city", ["org_id", "city"], unique=False)
        batch_op.create_index("ix_contacts_org_contact_type", ["org_id", "contact_type"], unique=False)
        batch_op.create_index("ix_contacts_org_country_state", ["org_id", "country", "state"], unique=False)
        batch_op.create_index("ix_contacts_org_job_title", ["org_id", "job_title"], unique=False)
        batch_op.create_index(
            "ix_contacts_org_last_name", ["org_id", "last_name", "first_name"], unique=False
        )
        batch_op.create_index("ix_contacts_org_source", ["org_id", "source"], unique=False)

    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("live_key", sa.String(length=36), nullable=True))
        batch_op.drop_index(
            batch_op.f("uq_enrollments_live"), sqlite_where=sa.text("status IN ('active', 'paused')")
        )
    # Every enrollment made so far was unique per contact and sequence.
    op.execute("UPDATE enrollments SET live_key = contact_id")
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.create_index(
            "uq_enrollments_live",
            ["sequence_id", "live_key"],
            unique=True,
            sqlite_where=sa.text("status IN ('active', 'paused') AND live_key IS NOT NULL"),
            postgresql_where=sa.text("status IN ('active', 'paused') AND live_key IS NOT NULL"),
        )
        batch_op.create_index("ix_enrollments_sequence_contact", ["sequence_id", "contact_id"], unique=False)

    with op.batch_alter_table("sequences", schema=None) as batch_op:
        batch_op.add_column(sa.Column("deleted_at", seqbridge.storage.types.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sequences", schema=None) as batch_op:
        batch_op.drop_column("deleted_at")

    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.drop_index("ix_enrollments_sequence_contact")
        batch_op.drop_index(
            "uq_enrollments_live",
            sqlite_where=sa.text("status IN ('active', 'paused') AND live_key IS NOT NULL"),
            postgresql_where=sa.text("status IN ('active', 'paused') AND live_key IS NOT NULL"),
        )
        batch_op.create_index(
            batch_op.f("uq_enrollments_live"),
            ["sequence_id", "contact_id"],
            unique=1,
            sqlite_where=sa.text("status IN ('active', 'paused')"),
        )
        batch_op.drop_column("live_key")

    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_index("ix_contacts_org_source")
        batch_op.drop_index("ix_contacts_org_last_name")
        batch_op.drop_index("ix_contacts_org_job_title")
        batch_op.drop_index("ix_contacts_org_country_state")
        batch_op.drop_index("ix_contacts_org_contact_type")
        batch_op.drop_index("ix_contacts_org_city")

    with op.batch_alter_table("companies", schema=None) as batch_op:
        batch_op.drop_index("ix_companies_org_country_state")
        batch_op.drop_index("ix_companies_org_city")

"""sequences enrollments step tasks

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 04:16:34.842365
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import seqbridge.storage.types

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sequences",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("org_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("trigger_type", sa.String(length=30), nullable=False),
        sa.Column(
            "trigger_config",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "exit_conditions",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("from_email", sa.String(length=320), nullable=True),
        sa.Column("from_name", sa.String(length=200), nullable=True),
        sa.Column("reply_to_email", sa.String(length=320), nullable=True),
        sa.Column(
            "send_window",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("created_at", seqbridge.storage.types.UTCDateTime(), nullable=False),
        sa.Column("updated_at", seqbridge.storage.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_sequences_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sequences")),
    )
    with op.batch_alter_table("sequences", schema=None) as batch_op:
        batch_op.create_index(
            "ix_sequences_org_kind_created", ["org_id", "kind", "created_at", "id"], unique=False
        )
        batch_op.create_index(
            "ix_sequences_org_trigger", ["org_id", "kind", "status", "trigger_type"], unique=False
        )

    op.create_table(
        "sequence_steps",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("org_id", sa.String(length=36), nullable=False),
        sa.Column("sequence_id", sa.String(length=36), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("delay_days", sa.Integer(), nullable=False),
        sa.Column("delay_minutes", sa.Integer(), nullable=False),
        sa.Column("delay_anchor", sa.String(length=20), nullable=False),
        sa.Column("action", sa.String(length=30), nullable=False),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("webhook_url", sa.Text(), nullable=True),
        sa.Column(
            "config",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", seqbridge.storage.types.UTCDateTime(), nullable=False),
        sa.Column("updated_at", seqbridge.storage.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_sequence_steps_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["sequence_id"],
            ["sequences.id"],
            name=op.f("fk_sequence_steps_sequence_id_sequences"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sequence_steps")),
    )
    with op.batch_alter_table("sequence_steps", schema=None) as batch_op:
        batch_op.create_index(
            "ix_sequence_steps_sequence_position", ["sequence_id", "position"], unique=False
        )

    op.create_table(
        "enrollments",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("org_id", sa.String(length=36), nullable=False),
        sa.Column("sequence_id", sa.String(length=36), nullable=False),
        sa.Column("contact_id", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("enrollment_source", sa.String(length=100), nullable=False),
        sa.Column(
            "enrollment_data",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("enrolled_at", seqbridge.storage.types.UTCDateTime(), nullable=False),
        sa.Column("enrollment_time", seqbridge.storage.types.UTCDateTime(), nullable=False),
        sa.Column("current_step_id", sa.String(length=36), nullable=True),
        sa.Column("next_send_at", seqbridge.storage.types.UTCDateTime(), nullable=True),
        sa.Column("paused_at", seqbridge.storage.types.UTCDateTime(), nullable=True),
        sa.Column("completed_at", seqbridge.storage.types.UTCDateTime(), nullable=True),
        sa.Column("exited_at", seqbridge.storage.types.UTCDateTime(), nullable=True),
        sa.Column("exit_reason", sa.String(length=30), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("company_id", sa.String(length=36), nullable=True),
        sa.Column("deal_id", sa.String(length=100), nullable=True),
        sa.Column("updated_at", seqbridge.storage.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_enrollments_contact_id_contacts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_enrollments_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["sequence_id"],
            ["sequences.id"],
            name=op.f("fk_enrollments_sequence_id_sequences"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enrollments")),
    )
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.create_index(
            "ix_enrollments_org_contact_status", ["org_id", "contact_id", "status"], unique=False
        )
        batch_op.create_index(
            "ix_enrollments_sequence_status", ["sequence_id", "status", "enrolled_at", "id"], unique=False
        )
        batch_op.create_index(
            "uq_enrollments_live",
            ["sequence_id", "contact_id"],
            unique=True,
            sqlite_where=sa.text("status IN ('active', 'paused')"),
            postgresql_where=sa.text("status IN ('active', 'paused')"),
        )

    op.create_table(
        "step_tasks",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("org_id", sa.String(length=36), nullable=False),
        sa.Column("sequence_id", sa.String(length=36), nullable=False),
        sa.Column("enrollment_id", sa.String(length=36), nullable=False),
        sa.Column("step_id", sa.String(length=36), nullable=True),
        sa.Column("contact_id", sa.String(length=36), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("scheduled_for", seqbridge.storage.types.UTCDateTime(), nullable=True),
        sa.Column("remaining_seconds", sa.Integer(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(length=200), nullable=True),
        sa.Column("lease_expires_at", seqbridge.storage.types.UTCDateTime(), nullable=True),
        sa.Column("idempotency_key", sa.String(length=100), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", seqbridge.storage.types.UTCDateTime(), nullable=False),
        sa.Column("updated_at", seqbridge.storage.types.UTCDateTime(), nullable=False),
        sa.Column("finished_at", seqbridge.storage.types.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["enrollment_id"],
            ["enrollments.id"],
            name=op.f("fk_step_tasks_enrollment_id_enrollments"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_step_tasks_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["sequence_id"],
            ["sequences.id"],
            name=op.f("fk_step_tasks_sequence_id_sequences"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["step_id"],
            ["sequence_steps.id"],
            name=op.f("fk_step_tasks_step_id_sequence_steps"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_step_tasks")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_step_tasks_idempotency_key")),
    )
    with op.batch_alter_table("step_tasks", schema=None) as batch_op:
        batch_op.create_index("ix_step_tasks_due", ["status", "scheduled_for"], unique=False)
        batch_op.create_index("ix_step_tasks_enrollment", ["enrollment_id", "status"], unique=False)
        batch_op.create_index("ix_step_tasks_sequence", ["sequence_id", "id"], unique=False)

    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("has_open_ticket", sa.Boolean(), server_default=sa.text("(false)"), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_column("has_open_ticket")

    with op.batch_alter_table("step_tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_step_tasks_sequence")
        batch_op.drop_index("ix_step_tasks_enrollment")
        batch_op.drop_index("ix_step_tasks_due")

    op.drop_table("step_tasks")
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_enrollments_live",
            sqlite_where=sa.text("status IN ('active', 'paused')"),
            postgresql_where=sa.text("status IN ('active', 'paused')"),
        )
        batch_op.drop_index("ix_enrollments_sequence_status")
        batch_op.drop_index("ix_enrollments_org_contact_status")

    op.drop_table("enrollments")
    with op.batch_alter_table("sequence_steps", schema=None) as batch_op:
        batch_op.drop_index("ix_sequence_steps_sequence_position")

    op.drop_table("sequence_steps")
    with op.batch_alter_table("sequences", schema=None) as batch_op:
        batch_op.drop_index("ix_sequences_org_trigger")
        batch_op.drop_index("ix_sequences_org_kind_created")

    op.drop_table("sequences")

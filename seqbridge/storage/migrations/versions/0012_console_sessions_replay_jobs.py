"""The operator console: sessions, replay jobs, and the indexes its pages read through

Revision ID: 0012
Revises: 0008
Create Date: 2026-12-01 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import seqbridge.storage.types

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "console_sessions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.String(length=36), nullable=False),
        sa.Column("key_id", sa.String(length=36), nullable=False),
        sa.Column("user_agent", sa.String(length=300), nullable=True),
        sa.Column("created_at", seqbridge.storage.types.UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", seqbridge.storage.types.UTCDateTime(), nullable=False),
        sa.Column("expires_at", seqbridge.storage.types.UTCDateTime(), nullable=False),
        sa.Column("ended_at", seqbridge.storage.types.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["key_id"], ["api_keys.id"], name=op.f("fk_console_sessions_key_id_api_keys"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_console_sessions_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_console_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_console_sessions_token_hash")),
    )
    with op.batch_alter_table("console_sessions", schema=None) as batch_op:
        batch_op.create_index("ix_console_sessions_key", ["key_id"], unique=False)

    op.create_table(
        "replay_jobs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("org_id", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("filter", _JSON, nullable=False),
        sa.Column("received_before", seqbridge.storage.types.UTCDateTime(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("replayed", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("cursor_at", seqbridge.storage.types.UTCDateTime(), nullable=True),
        sa.Column("cursor_id", sa.String(length=36), nullable=True),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("request_id", sa.String(length=100), nullable=True),
        sa.Column("lease_owner", sa.String(length=200), nullable=True),
        sa.Column("lease_expires_at", seqbridge.storage.types.UTCDateTime(), nullable=True),
        sa.Column("created_at", seqbridge.storage.types.UTCDateTime(), nullable=False),
        sa.Column("updated_at", seqbridge.storage.types.UTCDateTime(), nullable=False),
        sa.Column("finished_at", seqbridge.storage.types.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_replay_jobs_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_replay_jobs")),
    )
    with op.batch_alter_table("replay_jobs", schema=None) as batch_op:
        batch_op.create_index("ix_replay_jobs_org_created", ["org_id", "created_at", "id"], unique=False)
        batch_op.create_index("ix_replay_jobs_status", ["status"], unique=False)

    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_deliveries_org_status_received",
            ["org_id", "status", "received_at", "id", "hook", "processed_at"],
            unique=False,
        )
    with op.batch_alter_table("delivery_keys", schema=None) as batch_op:
        batch_op.create_index("ix_delivery_keys_org_key", ["org_id", "dedupe_key"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("delivery_keys", schema=None) as batch_op:
        batch_op.drop_index("ix_delivery_keys_org_key")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_org_status_received")
    with op.batch_alter_table("replay_jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_replay_jobs_status")
        batch_op.drop_index("ix_replay_jobs_org_created")
    op.drop_table("replay_jobs")
    with op.batch_alter_table("console_sessions", schema=None) as batch_op:
        batch_op.drop_index("ix_console_sessions_key")
    op.drop_table("console_sessions")

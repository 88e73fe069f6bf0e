"""leaner enrollment and task indexes

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 04:56:15.249478
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_enrollments_org_contact_status"))
        batch_op.drop_index(batch_op.f("ix_enrollments_sequence_contact"))
        batch_op.create_index("ix_enrollments_contact", ["contact_id", "sequence_id", "status"], unique=False)

    with op.batch_alter_table("step_tasks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_step_tasks_enrollment"))
        batch_op.drop_constraint(batch_op.f("uq_step_tasks_idempotency_key"), type_="unique")
        batch_op.create_index("uq_step_tasks_enrollment_step", ["enrollment_id", "step_id"], unique=True)
        batch_op.drop_column("idempotency_key")


def downgrade() -> None:
    with op.batch_alter_table("step_tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("idempotency_key", sa.VARCHAR(length=100), nullable=False))
        batch_op.drop_index("uq_step_tasks_enrollment_step")
        batch_op.create_unique_constraint(batch_op.f("uq_step_tasks_idempotency_key"), ["idempotency_key"])
        batch_op.create_index(
            batch_op.f("ix_step_tasks_enrollment"), ["enrollment_id", "status"], unique=False
        )

    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.drop_index("ix_enrollments_contact")
        batch_op.create_index(
            batch_op.f("ix_enrollments_sequence_contact"), ["sequence_id", "contact_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_enrollments_org_contact_status"), ["org_id", "contact_id", "status"], unique=False
        )

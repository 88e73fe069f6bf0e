"""the lookups a webhook makes use an index: phone with its order, custom attributes

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23 09:00:00.000000

- ``contacts (org_id, phone, created_at, id)`` replaces ``(org_id, phone)``: a phone lookup
  returns the oldest contact first, and with the order in the index the planner no longer
  prefers walking ``(org_id, created_at)`` over the whole organization.
- ``contact_attributes``: each contact's scalar custom attributes as text, filled from the
  contacts already stored, so a lookup by attribute is an index probe on SQLite too.
- ``deliveries (status, next_attempt_at, id)`` replaces ``(status, next_attempt_at)``: a claim
  takes due deliveries in arrival order (ties of the due time broken by the time-ordered id)
  straight from the index.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_MAX_NAME, _MAX_VALUE = 200, 1000


def _text(value):
    """The attribute's text form, as ``seqbridge.storage.contacts.attribute_text`` makes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return json.dumps(value)
    return None


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_due")
        batch_op.create_index("ix_deliveries_due", ["status", "next_attempt_at", "id"], unique=False)
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_index("ix_contacts_org_phone")
        batch_op.create_index(
            "ix_contacts_org_phone_created", ["org_id", "phone", "created_at", "id"], unique=False
        )
    op.create_table(
        "contact_attributes",
        sa.Column("contact_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("org_id", sa.String(length=36), nullable=False),
        sa.Column("value", sa.String(length=1000), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_contact_attributes_contact_id_contacts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_contact_attributes_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("contact_id", "name", name=op.f("pk_contact_attributes")),
    )
    with op.batch_alter_table("contact_attributes", schema=None) as batch_op:
        batch_op.create_index("ix_contact_attributes_lookup", ["org_id", "name", "value"], unique=False)

    conn = op.get_bind()
    contacts = sa.table("contacts", sa.column("id"), sa.column("org_id"), sa.column("attributes", sa.JSON))
    target = sa.table(
        "contact_attributes",
        sa.column("contact_id"),
        sa.column("name"),
        sa.column("org_id"),
        sa.column("value"),
    )
    last = ""
    while True:  # in pages, in id order: the contacts table may be large
        page = conn.execute(
            sa.select(contacts.c.id, contacts.c.org_id, contacts.c.attributes)
            .where(contacts.c.id > last)
            .order_by(contacts.c.id)
            .limit(5000)
        ).all()
        if not page:
            break
        last = page[-1][0]
        rows = []
        for contact_id, org_id, attributes in page:
            if isinstance(attributes, str):  # SQLite may hand the JSON back as text
                attributes = json.loads(attributes)
            for name, value in (attributes or {}).items():
                text = _text(value)
                if text is not None and len(name) <= _MAX_NAME and len(text) <= _MAX_VALUE:
                    rows.append({"contact_id": contact_id, "name": name, "org_id": org_id, "value": text})
        if rows:
            conn.execute(sa.insert(target), rows)


def downgrade() -> None:
    with op.batch_alter_table("contact_attributes", schema=None) as batch_op:
        batch_op.drop_index("ix_contact_attributes_lookup")
    op.drop_table("contact_attributes")
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_index("ix_contacts_org_phone_created")
        batch_op.create_index("ix_contacts_org_phone", ["org_id", "phone"], unique=False)
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_due")
        batch_op.create_index("ix_deliveries_due", ["status", "next_attempt_at"], unique=False)

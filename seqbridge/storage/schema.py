"""Every table Seqbridge stores. Alembic migrations are written against this metadata."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    ForeignKey,
    Index,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

from seqbridge.storage.types import JSONDoc, SerialId, UTCDateTime

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_N_label)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ID = String(36)

organizations = Table(
    "organizations",
    metadata,
    Column("id", ID, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", ID, primary_key=True),
    Column("org_id", ID, ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    # The first characters of the key, shown in listings so a person can tell keys apart.
    Column("prefix", String(20), nullable=False),
    # SHA-256 of the whole key; the key itself is never stored.
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("scopes", JSONDoc, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
    Index("ix_api_keys_org_id", "org_id"),
)

companies = Table(
    "companies",
    metadata,
    Column("id", ID, primary_key=True),
    Column("org_id", ID, ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("account_type", String(100)),
    Column("industry", String(100)),
    Column("is_customer", Boolean, nullable=False, default=False),
    Column("is_supplier", Boolean, nullable=False, default=False),
    Column("city", String(100)),
    Column("state", String(100)),
    Column("country", String(100)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_companies_org_created", "org_id", "created_at", "id"),
    Index("ix_companies_org_account_type", "org_id", "account_type"),
    Index("ix_companies_org_industry", "org_id", "industry"),
)

contacts = Table(
    "contacts",
    metadata,
    Column("id", ID, primary_key=True),
    Column("org_id", ID, ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("email", String(320)),
    # Lower-cased email: uniqueness and lookups are case-insensitive.
    Column("email_normalized", String(320)),
    # E.164, e.g. +16505551234.
    Column("phone", String(20)),
    Column("first_name", String(200)),
    Column("last_name", String(200)),
    Column("contact_type", String(100)),
    Column("source", String(100)),
    Column("job_title", String(200)),
    Column("city", String(100)),
    Column("state", String(100)),
    Column("country", String(100)),
    Column("status", String(20), nullable=False, default="active"),
    Column("converted", Boolean, nullable=False, default=False),
    Column("timezone", String(64)),
    Column("company_id", ID, ForeignKey("companies.id", ondelete="SET NULL"), nullable=True),
    Column("attributes", JSONDoc, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("org_id", "email_normalized", name="uq_contacts_org_email"),
    Index("ix_contacts_org_phone", "org_id", "phone"),
    Index("ix_contacts_org_created", "org_id", "created_at", "id"),
    Index("ix_contacts_org_company", "org_id", "company_id"),
    Index("ix_contacts_org_status", "org_id", "status"),
)

contact_tags = Table(
    "contact_tags",
    metadata,
    Column("contact_id", ID, ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True),
    Column("tag", String(100), primary_key=True),
    Column("org_id", ID, ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Index("ix_contact_tags_org_tag", "org_id", "tag"),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", SerialId, primary_key=True, autoincrement=True),
    Column("org_id", ID, ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("actor_type", String(20), nullable=False),
    Column("actor_id", String(200), nullable=False),
    Column("tag", String(100), nullable=False),
    Column("subject_type", String(50), nullable=False),
    Column("subject_id", String(200), nullable=False),
    Column("request_id", String(100)),
    Column("data", JSONDoc, nullable=False),
    # SHA-256 of the previous event of the same organization ("" for the first).
    Column("prev_hash", String(64), nullable=False),
    # SHA-256 over this event's fields and prev_hash.
    Column("hash", String(64), nullable=False),
    Index("ix_audit_events_org_id", "org_id", "id"),
    Index("ix_audit_events_org_tag", "org_id", "tag", "id"),
    Index("ix_audit_events_org_subject", "org_id", "subject_type", "subject_id", "id"),
    Index("ix_audit_events_org_actor", "org_id", "actor_id", "id"),
    Index("ix_audit_events_org_time", "org_id", "occurred_at"),
)

# The last link of each organization's audit chain. Locking this row serialises appends, so the
# chain never forks; comparing it with the last event detects a deleted tail.
audit_heads = Table(
    "audit_heads",
    metadata,
    Column("org_id", ID, ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True),
    Column("last_event_id", SerialId, nullable=False),
    Column("last_hash", String(64), nullable=False),
)

__all__ = [
    "api_keys",
    "audit_events",
    "audit_heads",
    "companies",
    "contact_tags",
    "contacts",
    "metadata",
    "organizations",
]

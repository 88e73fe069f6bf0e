"""Every table Seqbridge stores. Alembic migrations are written against this metadata."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
    true,
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
    Index("ix_companies_org_city", "org_id", "city"),
    Index("ix_companies_org_country_state", "org_id", "country", "state"),
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
    # A minimal support-ticket marker: an open ticket makes the contact ineligible for outreach.
    Column("has_open_ticket", Boolean, nullable=False, default=False, server_default=text("false")),
    Column("attributes", JSONDoc, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("org_id", "email_normalized", name="uq_contacts_org_email"),
    # A webhook names its contact by phone (WhatsApp, SMS): one index probe, already in the order
    # lookups return (oldest first), whatever the organization's size.
    Index("ix_contacts_org_phone_created", "org_id", "phone", "created_at", "id"),
    Index("ix_contacts_org_created", "org_id", "created_at", "id"),
    Index("ix_contacts_org_company", "org_id", "company_id"),
    Index("ix_contacts_org_status", "org_id", "status"),
    # The event-queue dialect's contact_filter fields.
    Index("ix_contacts_org_contact_type", "org_id", "contact_type"),
    Index("ix_contacts_org_source", "org_id", "source"),
    Index("ix_contacts_org_job_title", "org_id", "job_title"),
    Index("ix_contacts_org_city", "org_id", "city"),
    Index("ix_contacts_org_country_state", "org_id", "country", "state"),
    Index("ix_contacts_org_last_name", "org_id", "last_name", "first_name"),
)

contact_tags = Table(
    "contact_tags",
    metadata,
    Column("contact_id", ID, ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True),
    Column("tag", String(100), primary_key=True),
    Column("org_id", ID, ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Index("ix_contact_tags_org_tag", "org_id", "tag"),
)

# Each contact's scalar custom attributes as text (strings as they are, numbers and booleans as
# JSON writes them), kept by the contact store beside ``contacts.attributes``: a lookup by
# attribute (a CRM's own id for the contact) is one index probe on both engines.
contact_attributes = Table(
    "contact_attributes",
    metadata,
    Column("contact_id", ID, ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(200), primary_key=True),
    Column("org_id", ID, ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("value", String(1000), nullable=False),
    Index("ix_contact_attributes_lookup", "org_id", "name", "value"),
)

# Sequences and event queues are one engine: ``kind`` says which API dialect owns the row.
sequences = Table(
    "sequences",
    metadata,
    Column("id", ID, primary_key=True),
    Column("org_id", ID, ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("name", String(200), nullable=False),
    Column("description", Text),
    Column("trigger_type", String(30), nullable=False),
    Column("trigger_config", JSONDoc, nullable=False),
    Column("exit_conditions", JSONDoc, nullable=False),
    Column("status", String(20), nullable=False),
    Column("from_email", String(320)),
    Column("from_name", String(200)),
    Column("reply_to_email", String(320)),
    # Optional send window (days, hours, time zone); used by the step processor.
    Column("send_window", JSONDoc, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # Event queues are deleted softly: their enrollments and task history stay readable in storage.
    Column("deleted_at", UTCDateTime, nullable=True),
    Index("ix_sequences_org_kind_created", "org_id", "kind", "created_at", "id"),
    Index("ix_sequences_org_trigger", "org_id", "kind", "status", "trigger_type"),
)

sequence_steps = Table(
    "sequence_steps",
    metadata,
    Column("id", ID, primary_key=True),
    Column("org_id", ID, ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("sequence_id", ID, ForeignKey("sequences.id", ondelete="CASCADE"), nullable=False),
    # 1-based; positions within a sequence are always 1..n without gaps.
    Column("position", Integer, nullable=False),
    Column("delay_days", Integer, nullable=False, default=0),
    Column("delay_minutes", Integer, nullable=False, default=0),
    # What the delay counts from: the previous step's send ("previous") or the enrollment anchor.
    Column("delay_anchor", String(20), nullable=False, default="previous"),
    # email | webhook (sequences); send_email | send_webhook | add_tag | update_contact (queues).
    Column("action", String(30), nullable=False),
    Column("subject", Text),
    Column("body", Text),
    Column("webhook_url", Text),
    Column("config", JSONDoc, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_sequence_steps_sequence_position", "sequence_id", "position"),
)

enrollments = Table(
    "enrollments",
    metadata,
    Column("id", ID, primary_key=True),
    Column("org_id", ID, ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("sequence_id", ID, ForeignKey("sequences.id", ondelete="CASCADE"), nullable=False),
    Column("contact_id", ID, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False),
    Column("status", String(20), nullable=False),
    Column("enrollment_source", String(100), nullable=False),
    Column("enrollment_data", JSONDoc, nullable=False),
    Column("enrolled_at", UTCDateTime, nullable=False),
    # The anchor step delays count from (defaults to enrolled_at; a caller may set it).
    Column("enrollment_time", UTCDateTime, nullable=False),
    # The next step to run and when; both null when nothing is pending.
    Column("current_step_id", ID, nullable=True),
    Column("next_send_at", UTCDateTime, nullable=True),
    Column("paused_at", UTCDateTime, nullable=True),
    Column("completed_at", UTCDateTime, nullable=True),
    Column("exited_at", UTCDateTime, nullable=True),
    Column("exit_reason", String(30), nullable=True),
    Column("last_error", Text, nullable=True),
    # Linked CRM entities (event-queue dialect): the company and an optional deal id.
    Column("company_id", ID, nullable=True),
    Column("deal_id", String(100), nullable=True),
    # The contact id when this enrollment must be the contact's only live one in the sequence
    # (always, for sequences); null for an event-queue enrollment made with
    # skip_if_already_enrolled: false, which may run beside another.
    Column("live_key", ID, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_enrollments_sequence_status", "sequence_id", "status", "enrolled_at", "id"),
    # A contact's enrollments: live checks per sequence, and "everything this contact is in".
    Index("ix_enrollments_contact", "contact_id", "sequence_id", "status"),
    # At most one live (active or paused) keyed enrollment per contact and sequence, even under races.
    Index(
        "uq_enrollments_live",
        "sequence_id",
        "live_key",
        unique=True,
        sqlite_where=text("status IN ('active', 'paused') AND live_key IS NOT NULL"),
        postgresql_where=text("status IN ('active', 'paused') AND live_key IS NOT NULL"),
    ),
)

# Where a filter bulk-enroll pass over a queue stands: calls with the same body take the next page
# after after_contact_id (contacts in id order). Deleted when a call answers has_more: false.
bulk_enroll_passes = Table(
    "bulk_enroll_passes",
    metadata,
    Column("sequence_id", ID, ForeignKey("sequences.id", ondelete="CASCADE"), primary_key=True),
    # SHA-256 of the call's arguments (filters, skip, anchor, deal, source), less the cursor.
    Column("pass_key", String(64), primary_key=True),
    Column("org_id", ID, ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("after_contact_id", ID, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
)

# One scheduled execution of one step for one enrollment. The processor claims these.
step_tasks = Table(
    "step_tasks",
    metadata,
    # Monotonic, so cursor pages over tasks stay stable while new ones are inserted.
    Column("id", SerialId, primary_key=True, autoincrement=True),
    Column("org_id", ID, ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("sequence_id", ID, ForeignKey("sequences.id", ondelete="CASCADE"), nullable=False),
    Column("enrollment_id", ID, ForeignKey("enrollments.id", ondelete="CASCADE"), nullable=False),
    Column("step_id", ID, ForeignKey("sequence_steps.id", ondelete="SET NULL"), nullable=True),
    Column("contact_id", ID, nullable=False),
    Column("position", Integer, nullable=False),
    # pending | paused | leased | done | cancelled | failed
    Column("status", String(20), nullable=False),
    Column("scheduled_for", UTCDateTime, nullable=True),
    # While paused: how long was left until scheduled_for.
    Column("remaining_seconds", Integer, nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("lease_owner", String(200), nullable=True),
    Column("lease_expires_at", UTCDateTime, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    Index("ix_step_tasks_due", "status", "scheduled_for"),
    # One task per step per enrollment; its idempotency key is derived from the pair
    # (task_idempotency_key), so a send can never be recorded twice.
    Index("uq_step_tasks_enrollment_step", "enrollment_id", "step_id", unique=True),
    Index("ix_step_tasks_sequence", "sequence_id", "id"),
)

# Every message a step produced, under the step's idempotency key: the processor's record of
# what was sent. With no SMTP configured, emails land here as "captured" instead of being sent.
outbox = Table(
    "outbox",
    metadata,
    Column("id", SerialId, primary_key=True, autoincrement=True),
    Column("org_id", ID, ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("idempotency_key", String(100), nullable=False, unique=True),
    Column("task_id", SerialId, nullable=True),
    Column("sequence_id", ID, nullable=True),
    Column("enrollment_id", ID, nullable=True),
    Column("contact_id", ID, nullable=True),
    # email | webhook
    Column("channel", String(20), nullable=False),
    # captured (no SMTP configured) | sent | failed
    Column("status", String(20), nullable=False),
    Column("recipient", Text, nullable=True),
    Column("subject", Text, nullable=True),
    Column("body", Text, nullable=True),
    Column("headers", JSONDoc, nullable=False),
    Column("detail", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_outbox_org_id", "org_id", "id"),
)

# Processor workers and their heartbeats (stale ones have their leases reclaimed).
workers = Table(
    "workers",
    metadata,
    Column("id", String(200), primary_key=True),
    Column("started_at", UTCDateTime, nullable=False),
    Column("heartbeat_at", UTCDateTime, nullable=False),
    Column("stopped_at", UTCDateTime, nullable=True),
    Column("processed", Integer, nullable=False, default=0),
)

# Webhook deliveries: every request a hook accepted (or rejected), stored before it is answered.
deliveries = Table(
    "deliveries",
    metadata,
    Column("id", ID, primary_key=True),
    Column("org_id", ID, ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("hook", String(200), nullable=False),
    # queued | processing | processed | failed | dead | rejected | ignored (see DeliveryStatus)
    Column("status", String(20), nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Column("request_id", String(100), nullable=True),
    Column("method", String(10), nullable=False),
    Column("content_type", String(200), nullable=True),
    # Headers and query string with secrets redacted.
    Column("headers", JSONDoc, nullable=False),
    Column("query", JSONDoc, nullable=False),
    # The raw body as received; None for a rejected request (an unverified body is not kept).
    Column("body", LargeBinary, nullable=True),
    Column("body_size", Integer, nullable=False),
    # [{dedupe_key, kind, data}] as the connector parsed them; JSON null when they are exactly
    # what the connector reads from the stored request again (left to the worker to read).
    Column("events", JSONDoc, nullable=False),
    Column("reject_reason", String(50), nullable=True),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=True),
    Column("lease_owner", String(200), nullable=True),
    Column("lease_expires_at", UTCDateTime, nullable=True),
    # Per event: the rule that matched and each action with its outcome.
    Column("results", JSONDoc, nullable=True),
    # [{at, attempt, error}] — every failed attempt.
    Column("errors", JSONDoc, nullable=False),
    Column("replays", Integer, nullable=False),
    Column("processed_at", UTCDateTime, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
    # Whether its receipt (``hook:delivery:received`` / ``rejected``) is in the audit log. The
    # inbox stores False and answers; the worker writes the event when it claims the delivery
    # (or sweeps ignored and rejected ones) and sets this in the same transaction.
    Column("receipt_audited", Boolean, nullable=False, server_default=true()),
    # Claimed before every ordinary delivery that is due (0: ordinary; higher first): set at
    # receipt when an event matches a rule with ``priority: high`` (an opt-out, most often).
    Column("priority", SmallInteger, nullable=False, server_default=text("0")),
    Index("ix_deliveries_org_received", "org_id", "received_at", "id"),
    # Ends in id: a hook's deliveries page newest first by (received_at, id) straight off the index.
    Index("ix_deliveries_org_hook_received_id", "org_id", "hook", "received_at", "id"),
    # Claims: due ones in due order, then arrival order (ids are time-ordered).
    Index("ix_deliveries_due", "status", "next_attempt_at", "id"),
    # Claims take the queued deliveries with a priority first, in due order. Partial: an
    # ordinary receipt adds no entry, and the index holds only what is queued with a priority
    # (a handful, however deep the queue).
    Index(
        "ix_deliveries_urgent",
        "next_attempt_at",
        "id",
        sqlite_where=text("status = 'queued' AND priority > 0"),
        postgresql_where=text("status = 'queued' AND priority > 0"),
    ),
    # The ignored and rejected deliveries whose receipt is not audited yet: the worker sweeps
    # them (the others are audited when claimed, so a webhook's receipt adds no entry here).
    Index(
        "ix_deliveries_unaudited",
        "id",
        sqlite_where=text("receipt_audited = 0 AND status IN ('ignored', 'rejected')"),
        postgresql_where=text("NOT receipt_audited AND status IN ('ignored', 'rejected')"),
    ),
    # The console and replay jobs: a status's newest (lists filtered by status), its count and
    # oldest item (the backlog, dead / failed counts), and a replay job's walk through a filter.
    # hook and processed_at ride along so the overview's charts read only this index (its
    # entry is rewritten when the status changes, and processed_at changes with it).
    Index(
        "ix_deliveries_org_status_received", "org_id", "status", "received_at", "id", "hook", "processed_at"
    ),
)

# The provider ids already seen per hook: a retried delivery finds its key here and acts on nothing.
delivery_keys = Table(
    "delivery_keys",
    metadata,
    Column("org_id", ID, ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True),
    Column("hook", String(200), primary_key=True),
    Column("dedupe_key", String(255), primary_key=True),
    Column("delivery_id", ID, ForeignKey("deliveries.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # A body-hash key's end (the hook's ``dedupe`` window): the same body after it is a new
    # delivery, which takes the key over. None for a provider's own id: kept with its delivery.
    Column("expires_at", UTCDateTime, nullable=True),
    # The keys of a delivery (its receipt's audit event, retention, the cascade from deliveries).
    Index("ix_delivery_keys_delivery", "delivery_id"),
    # The console's search by provider id, across hooks.
    Index("ix_delivery_keys_org_key", "org_id", "dedupe_key"),
)

# Idempotency-Key on the API's POST routes: the first answer is kept and replayed for a retry.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("org_id", ID, ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("method", String(10), nullable=False),
    Column("path", String(500), nullable=False),
    # SHA-256 of method, path, query and body: the same key with another request is refused.
    Column("request_hash", String(64), nullable=False),
    # in_progress | done
    Column("state", String(20), nullable=False),
    Column("response_status", Integer, nullable=True),
    Column("response_type", String(200), nullable=True),
    Column("response_body", LargeBinary, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    # An in-progress key whose request died is free again after this.
    Column("locked_until", UTCDateTime, nullable=False),
    Index("ix_idempotency_keys_created", "created_at"),
)

# REST hooks: a subscriber's URL for one event type ("enrollment.created", ...). Events come from
# the audit log: ``audit_cursor`` is the last audit event id of the organization already relayed.
hook_subscriptions = Table(
    "hook_subscriptions",
    metadata,
    Column("id", ID, primary_key=True),
    Column("org_id", ID, ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("event", String(50), nullable=False),
    Column("target_url", Text, nullable=False),
    Column("status", String(20), nullable=False),  # active | disabled
    Column("audit_cursor", SerialId, nullable=False),
    Column("created_by", String(100), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # Since when every send has failed (cleared by a success); the subscription is disabled when
    # this is older than HOOK_DISABLE_AFTER_SECONDS.
    Column("failing_since", UTCDateTime, nullable=True),
    Column("last_success_at", UTCDateTime, nullable=True),
    Column("last_failure_at", UTCDateTime, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("disabled_at", UTCDateTime, nullable=True),
    Column("disabled_reason", Text, nullable=True),
    Index("ix_hook_subscriptions_org_created", "org_id", "created_at", "id"),
    Index("ix_hook_subscriptions_status", "status", "org_id"),
)

# One event for one subscription, on its way out (signed, retried with backoff).
hook_notifications = Table(
    "hook_notifications",
    metadata,
    Column("id", ID, primary_key=True),  # also the webhook-id the receiver dedupes on
    Column("org_id", ID, ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("subscription_id", ID, ForeignKey("hook_subscriptions.id", ondelete="CASCADE"), nullable=False),
    Column("event", String(50), nullable=False),
    Column("audit_event_id", SerialId, nullable=False),
    Column("payload", JSONDoc, nullable=False),
    # pending | sending | sent | failed | dropped
    Column("status", String(20), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=True),
    Column("lease_owner", String(200), nullable=True),
    Column("lease_expires_at", UTCDateTime, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("sent_at", UTCDateTime, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("subscription_id", "audit_event_id"),
    Index("ix_hook_notifications_due", "status", "next_attempt_at"),
    Index("ix_hook_notifications_org_updated", "org_id", "updated_at"),  # retention
)

# Signed-in console sessions. The browser holds a random token in an HttpOnly cookie; only its
# SHA-256 is stored. Every request checks the session is live, not idle, and its key not revoked.
console_sessions = Table(
    "console_sessions",
    metadata,
    Column("id", ID, primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("org_id", ID, ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("key_id", ID, ForeignKey("api_keys.id", ondelete="CASCADE"), nullable=False),
    Column("user_agent", String(300), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    # Touched at most once a minute; the session ends CONSOLE_IDLE_MINUTES after it.
    Column("last_seen_at", UTCDateTime, nullable=False),
    # The absolute end, however active the session is (CONSOLE_SESSION_HOURS after sign-in).
    Column("expires_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime, nullable=True),
    Index("ix_console_sessions_key", "key_id"),
)

# Replay by filter, as a job the worker runs in batches: ``cursor_*`` is the (received_at, id) of
# the last delivery handled, so each matching delivery is replayed at most once.
replay_jobs = Table(
    "replay_jobs",
    metadata,
    Column("id", ID, primary_key=True),
    Column("org_id", ID, ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    # queued | running | done | cancelled (see ReplayJobStatus)
    Column("status", String(20), nullable=False),
    # {hook, statuses, since, until} as given; ``until`` is capped at creation (see below).
    Column("filter", JSONDoc, nullable=False),
    # Deliveries received from now on are not part of the job.
    Column("received_before", UTCDateTime, nullable=False),
    Column("total", Integer, nullable=False),
    Column("replayed", Integer, nullable=False),
    Column("skipped", Integer, nullable=False),
    Column("cursor_at", UTCDateTime, nullable=True),
    Column("cursor_id", ID, nullable=True),
    # The key that asked (the replays are recorded as its doing) and its request.
    Column("created_by", String(200), nullable=False),
    Column("request_id", String(100), nullable=True),
    Column("lease_owner", String(200), nullable=True),
    Column("lease_expires_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    Index("ix_replay_jobs_org_created", "org_id", "created_at", "id"),
    Index("ix_replay_jobs_status", "status"),
)

# What the server runs: each mapping file's text as a web or worker process loaded it, one row per
# change (a new version, or the file no longer serving). ``seqbridge mappings diff`` compares a
# change against the newest row of each file. The text is the file as written, with its ``${ENV}``
# references: never a value from the environment.
mapping_versions = Table(
    "mapping_versions",
    metadata,
    Column("id", SerialId, primary_key=True, autoincrement=True),
    # The file's name in the mappings directory (which is flat): what identifies it.
    Column("file", String(255), nullable=False),
    # The path the loading process read it from.
    Column("path", Text, nullable=False),
    # None (with source): the file no longer serves any hook (removed, or broken from the start).
    Column("sha256", String(64), nullable=True),
    Column("source", Text, nullable=True),
    # {hook: organization} for every hook live from this version.
    Column("hooks", JSONDoc, nullable=False),
    Column("loaded_at", UTCDateTime, nullable=False),
    # host:pid of the process that first loaded it.
    Column("loaded_by", String(200), nullable=False),
    Index("ix_mapping_versions_file", "file", "id"),
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
    "console_sessions",
    "contact_attributes",
    "contact_tags",
    "contacts",
    "deliveries",
    "delivery_keys",
    "enrollments",
    "idempotency_keys",
    "mapping_versions",
    "metadata",
    "organizations",
    "outbox",
    "replay_jobs",
    "sequence_steps",
    "sequences",
    "step_tasks",
    "workers",
]

"""Use cases. No Flask here: the web layer and the CLI both call these."""

from __future__ import annotations

from typing import Any

from seqbridge.clock import Clock
from seqbridge.services.activity import ActivityService
from seqbridge.services.audit_log import AuditLogService
from seqbridge.services.companies import CompanyService
from seqbridge.services.console_sessions import SessionService
from seqbridge.services.contacts import ContactService
from seqbridge.services.deliveries import DeliveryService
from seqbridge.services.enrollment import EnrollmentService
from seqbridge.services.hook_catalog import HookCatalogService
from seqbridge.services.idempotency import IdempotencyService
from seqbridge.services.inbox import Inbox
from seqbridge.services.keys import KeyService, OrgKeyService
from seqbridge.services.mapping_diff import MappingDiffService
from seqbridge.services.mapping_versions import MappingVersionService
from seqbridge.services.outbox import OutboxService
from seqbridge.services.overview import OverviewService
from seqbridge.services.replay_jobs import ReplayJobService
from seqbridge.services.retention import RetentionService
from seqbridge.services.scheduling import Scheduler
from seqbridge.services.sequences import SequenceService
from seqbridge.services.steps import StepService
from seqbridge.services.subscriptions import SubscriptionService
from seqbridge.storage.db import Database


class Services:
    """Every use case, wired to one database and one clock."""

    def __init__(self, db: Database, clock: Clock, settings: dict[str, Any]) -> None:
        self.db = db
        self.clock = clock
        self.settings = settings
        self.keys = KeyService(db, clock)
        self.contacts = ContactService(db, clock, settings.get("DEFAULT_PHONE_REGION") or None)
        self.companies = CompanyService(db, clock)
        self.audit_log = AuditLogService(db)
        self.scheduler = Scheduler()
        self.sequences = SequenceService(db, clock, self.scheduler)
        self.enrollment = EnrollmentService(db, clock, self.sequences, self.scheduler)
        self.outbox = OutboxService(db, clock)
        self.steps = StepService(db, clock, self.scheduler)
        # The inbox runs a delivery at once for `respond: after_actions` hooks, through processing.
        self.inbox = Inbox(
            db,
            clock,
            settings,
            process=lambda delivery_id, owner: self.deliveries.process(delivery_id, owner),
        )
        self.deliveries = DeliveryService(db, clock, settings, self, self.inbox)
        self.idempotency = IdempotencyService(db, clock)
        self.subscriptions = SubscriptionService(db, clock, settings)
        self.retention = RetentionService(db, clock)
        # What the server runs (recorded as it loads the mappings), and diffs against it.
        self.mapping_versions = MappingVersionService(db, clock)
        self.mapping_diff = MappingDiffService(
            db, clock, settings, self.mapping_versions, lambda: self.inbox.registry
        )
        # Auto-enrollment: new contacts and newly added tags start matching sequences.
        self.contacts.created_listeners.append(self.enrollment.on_contact_created)
        self.contacts.tags_added_listeners.append(self.enrollment.on_tags_added)
        # The operator console (and the replay-jobs API).
        self.replay_jobs = ReplayJobService(db, clock, settings, self.deliveries)
        self.sessions = SessionService(db, clock, self.keys, settings)
        self.org_keys = OrgKeyService(db, clock)
        self.overview = OverviewService(db, clock, settings)
        self.activity = ActivityService(db)
        self.hook_catalog = HookCatalogService(db, clock, self.deliveries)

"""A transaction and the stores that run SQL inside it."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from sqlalchemy.engine import Connection

if TYPE_CHECKING:
    from seqbridge.storage.audit import AuditStore
    from seqbridge.storage.contacts import CompanyStore, ContactStore
    from seqbridge.storage.db import Database
    from seqbridge.storage.deliveries import DeliveryStore
    from seqbridge.storage.delivery_stats import DeliveryStatsStore
    from seqbridge.storage.enrollments import EnrollmentStore
    from seqbridge.storage.idempotency import IdempotencyStore
    from seqbridge.storage.orgs import KeyStore, OrgStore
    from seqbridge.storage.processor import ProcessorStore
    from seqbridge.storage.replay_jobs import ReplayJobStore
    from seqbridge.storage.sequences import SequenceStore
    from seqbridge.storage.sessions import SessionStore
    from seqbridge.storage.subscriptions import SubscriptionStore


class Tx:
    """One open transaction. Each store is the only place its tables are read or written."""

    def __init__(self, conn: Connection, db: Database) -> None:
        self.conn = conn
        self.db = db
        #: Audit events recorded in this transaction, written just before it commits.
        self.pending_audit: list[tuple] = []

    @cached_property
    def orgs(self) -> OrgStore:
        from seqbridge.storage.orgs import OrgStore

        return OrgStore(self.conn)

    @cached_property
    def keys(self) -> KeyStore:
        from seqbridge.storage.orgs import KeyStore

        return KeyStore(self.conn)

    @cached_property
    def contacts(self) -> ContactStore:
        from seqbridge.storage.contacts import ContactStore

        return ContactStore(self.conn)

    @cached_property
    def companies(self) -> CompanyStore:
        from seqbridge.storage.contacts import CompanyStore

        return CompanyStore(self.conn)

    @cached_property
    def audit(self) -> AuditStore:
        from seqbridge.storage.audit import AuditStore

        return AuditStore(self.conn)

    @cached_property
    def sequences(self) -> SequenceStore:
        from seqbridge.storage.sequences import SequenceStore

        return SequenceStore(self.conn)

    @cached_property
    def enrollments(self) -> EnrollmentStore:
        from seqbridge.storage.enrollments import EnrollmentStore

        return EnrollmentStore(self.conn)

    @cached_property
    def processor(self) -> ProcessorStore:
        from seqbridge.storage.processor import ProcessorStore

        return ProcessorStore(self.conn)

    @cached_property
    def deliveries(self) -> DeliveryStore:
        from seqbridge.storage.deliveries import DeliveryStore

        return DeliveryStore(self.conn)

    @cached_property
    def idempotency(self) -> IdempotencyStore:
        from seqbridge.storage.idempotency import IdempotencyStore

        return IdempotencyStore(self.conn)

    @cached_property
    def subscriptions(self) -> SubscriptionStore:
        from seqbridge.storage.subscriptions import SubscriptionStore

        return SubscriptionStore(self.conn)

    # The console ---------------------------------------------------------------------------

    @cached_property
    def delivery_stats(self) -> DeliveryStatsStore:
        from seqbridge.storage.delivery_stats import DeliveryStatsStore

        return DeliveryStatsStore(self.conn)

    @cached_property
    def replay_jobs(self) -> ReplayJobStore:
        from seqbridge.storage.replay_jobs import ReplayJobStore

        return ReplayJobStore(self.conn)

    @cached_property
    def sessions(self) -> SessionStore:
        from seqbridge.storage.sessions import SessionStore

        return SessionStore(self.conn)

"""A transaction and the stores that run SQL inside it."""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any

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


#: A callback batched by the transaction: called once with every item registered with it.
Batched = Callable[..., None]


class Tx:
    """One open transaction. Each store is the only place its tables are read or written.

    Work can be attached to the transaction's end, as with Django's ``transaction.on_commit``:
    :meth:`before_commit` callbacks run inside the transaction just before it commits (the audit
    log writes its events there), :meth:`on_commit` callbacks after it has committed (wake-ups,
    which must never announce a change that could still roll back). Both are batched: each
    callback is called once, with every item registered with it, in registration order. Both are
    savepoint-aware: what a rolled-back nested block registered is dropped with it.
    """

    def __init__(self, conn: Connection, db: Database) -> None:
        self.conn = conn
        self.db = db
        self._before: list[tuple[Batched, Any]] = []
        self._after: list[tuple[Batched, Any]] = []

    def before_commit(self, callback: Callable[[Tx, list[Any]], None], item: Any) -> None:
        """Call ``callback(tx, items)`` inside this transaction just before it commits."""
        self._before.append((callback, item))

    def on_commit(self, callback: Callable[[list[Any]], None], item: Any = None) -> None:
        """Call ``callback(items)`` once this transaction has committed (never if it rolls back).

        An exception from it is the caller's to handle: the data is committed whatever happens.
        """
        self._after.append((callback, item))

    def mark(self) -> tuple[int, int]:
        """Where the registered callbacks stand now (taken when a SAVEPOINT opens)."""
        return len(self._before), len(self._after)

    def rollback_to(self, mark: tuple[int, int]) -> None:
        """Drop what was registered after ``mark`` (its SAVEPOINT rolled back)."""
        del self._before[mark[0] :]
        del self._after[mark[1] :]

    def run_before_commit(self) -> None:
        """Run the :meth:`before_commit` callbacks; ones they register run too, in the same pass."""
        while self._before:
            pending, self._before = self._before, []
            for callback, items in _batches(pending):
                callback(self, items)

    def run_on_commit(self) -> None:
        pending, self._after = self._after, []
        for callback, items in _batches(pending):
            callback(items)

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


def _batches(registered: list[tuple[Batched, Any]]) -> list[tuple[Batched, list[Any]]]:
    """Each callback once, in the order first registered, with its items in order."""
    grouped: dict[Batched, list[Any]] = {}
    for callback, item in registered:
        grouped.setdefault(callback, []).append(item)
    return list(grouped.items())

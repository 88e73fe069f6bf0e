"""A batch's unit of work: the stores a batch of webhook deliveries acts through, so that a few
hundred deliveries cost a handful of statements, not a few dozen each.

The deliveries' actions run through the same services the API uses, unchanged, one after the
other, in order. Inside a staged transaction (``Database.transaction(staged=True)``) the stores
those services touch (contacts with their tags and attributes, enrollments with their tasks,
sequences, companies) are the ones here:

- **Reads** come from an identity map filled up front, one query per kind of identifier for the
  whole batch (:meth:`Staging.prefetch`: ``phone IN (…)``, ``email IN (…)``, …), and from the
  database for anything not prefetched; either way, a read sees every write the batch made
  before it (a STOP then a START from one number ends active; two sign-ups with one new email
  make one contact).
- **Writes** change the map and are held. :meth:`Staging.flush` writes them grouped by kind just
  before the commit: one multi-row insert per table, one update per set of identical values
  (every STOP's ``status = unsubscribed``), one statement cancelling the tasks of every
  enrollment that ended for the same reason.
- A nested transaction is a *virtual* savepoint: an undo log, no SQL. One delivery whose actions
  raise is rolled back alone, and the rest of the batch goes on.

Anything a service asks of these stores that they do not hold raises :class:`NotStaged`; the
delivery is then run alone, in a plain transaction, with the plain stores. Concurrent writers are
the database's business at flush time: a unique email or live enrollment taken by someone else
meanwhile fails the flush, and the batch is run again one delivery at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.engine import Connection

from seqbridge.storage.staged.base import NotStaged
from seqbridge.storage.staged.contacts import StagedContacts
from seqbridge.storage.staged.enrollments import StagedEnrollments
from seqbridge.storage.staged.sequences import StagedCompanies, StagedSequences


@dataclass(frozen=True)
class Lookups:
    """What a batch's actions will look up, normalised as the lookups will be made."""

    org_id: str
    phones: frozenset[str] = frozenset()
    emails: frozenset[str] = frozenset()
    ids: frozenset[str] = frozenset()
    attributes: frozenset[tuple[str, str]] = frozenset()
    sequences: frozenset[str] = frozenset()
    #: Some action may end enrollments: read their cancellable tasks too.
    ends_enrollments: bool = False
    #: Some action may create or tag contacts: read the sequences that would enroll them.
    triggers: tuple[str, ...] = ()


class Staging:
    """The identity map, the held writes and the undo log of one staged transaction."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.undo: list[Callable[[], None]] = []
        self.contacts = StagedContacts(self)
        self.enrollments = StagedEnrollments(self)
        self.sequences = StagedSequences(self)
        self.companies = StagedCompanies(self)

    def mark(self) -> int:
        return len(self.undo)

    def rollback_to(self, mark: int) -> None:
        """Undo every change made since ``mark`` (a virtual savepoint rolled back)."""
        while len(self.undo) > mark:
            self.undo.pop()()

    def prefetch(self, lookups: Lookups) -> None:
        """Read what the batch will look up, one query per kind of identifier."""
        self.contacts.prefetch(lookups)
        self.enrollments.prefetch_for_contacts(
            [i for i, r in self.contacts.rows.items() if r is not None], tasks=lookups.ends_enrollments
        )
        self.sequences.prefetch(lookups.org_id, sorted(lookups.sequences), lookups.triggers)

    def flush(self) -> None:
        """Write what the batch changed, grouped by kind (contacts before what refers to them)."""
        self.contacts.flush()
        self.enrollments.flush()
        self.undo.clear()


__all__ = ["Lookups", "NotStaged", "Staging"]

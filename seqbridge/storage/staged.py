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

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection

from seqbridge.storage.contacts import CompanyStore, ContactStore, attribute_text
from seqbridge.storage.enrollments import LIVE, EnrollmentStore
from seqbridge.storage.sequences import SequenceStore


class NotStaged(Exception):
    """The staged stores do not hold this operation: run the work in a plain transaction."""


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


Row = dict[str, Any]


def _copy(row: Row | None) -> Row | None:
    """What a read hands out: the caller's own dict (and attributes), never the map's."""
    if row is None:
        return None
    out = dict(row)
    if isinstance(out.get("attributes"), dict):
        out["attributes"] = dict(out["attributes"])
    return out


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


class _Lookup:
    """Which contacts have each value of one key (phone, email, attribute), for the values read
    so far; kept in step with the batch's writes."""

    def __init__(self, keys_of: Callable[[Row], Iterable[tuple]]) -> None:
        self.keys_of = keys_of
        self.ids: dict[tuple, set[str]] = {}

    def fill(
        self, key: tuple, db_ids: Iterable[str], rows: dict[str, Row | None], dirty: Iterable[str]
    ) -> None:
        """Record what the database said for ``key``, corrected by the batch's own writes."""
        found = set()
        for contact_id in (*db_ids, *dirty):
            row = rows.get(contact_id)
            if row is not None and key in self.keys_of(row):
                found.add(contact_id)
        self.ids[key] = found

    def move(self, contact_id: str, before: Row | None, after: Row | None) -> None:
        old = set(self.keys_of(before)) if before else set()
        new = set(self.keys_of(after)) if after else set()
        for key in old - new:
            if key in self.ids:
                self.ids[key].discard(contact_id)
        for key in new - old:
            if key in self.ids:
                self.ids[key].add(contact_id)


def _phone_keys(row: Row) -> list[tuple]:
    return [(row["org_id"], row["phone"])] if row.get("phone") else []


def _email_keys(row: Row) -> list[tuple]:
    return [(row["org_id"], row["email_normalized"])] if row.get("email_normalized") else []


def _attribute_keys(row: Row) -> list[tuple]:
    keys = []
    for name, value in (row.get("attributes") or {}).items():
        text = attribute_text(value)
        if text is not None:
            keys.append((row["org_id"], name, text))
    return keys


def _oldest_first(rows: Iterable[Row]) -> list[Row]:
    return sorted(rows, key=lambda r: (r["created_at"], r["id"]))


class _Unsupported:
    def __getattr__(self, name: str):
        raise NotStaged(f"{type(self).__name__}.{name} is not staged")


class StagedContacts(_Unsupported):
    """Contacts, their tags and their attribute index, as :class:`ContactStore` offers them."""

    def __init__(self, staging: Staging) -> None:
        self.staging = staging
        self.store = ContactStore(staging.conn)
        self.rows: dict[str, Row | None] = {}
        self.tags: dict[str, list[str]] = {}
        self.db_tags: dict[str, frozenset[str]] = {}
        self.inserted: dict[str, Row] = {}
        self.updated: dict[str, dict[str, Any]] = {}
        self.by_phone = _Lookup(_phone_keys)
        self.by_email = _Lookup(_email_keys)
        self.by_attribute = _Lookup(_attribute_keys)

    # Reading ---------------------------------------------------------------------------------

    def _dirty(self) -> list[str]:
        return [*self.inserted, *self.updated]

    def _adopt(self, rows: Iterable[Row]) -> list[str]:
        """Take rows the database returned into the map (the map's own version wins)."""
        ids = []
        for row in rows:
            if self.rows.get(row["id"]) is None and row["id"] not in self.updated:
                self.rows[row["id"]] = row
            ids.append(row["id"])
        return ids

    def prefetch(self, lookups: Lookups) -> None:
        org = lookups.org_id
        self._load_phones(org, [p for p in lookups.phones if (org, p) not in self.by_phone.ids])
        self._load_emails(org, [e for e in lookups.emails if (org, e) not in self.by_email.ids])
        self._load_ids(org, [i for i in lookups.ids if i not in self.rows])
        by_name: dict[str, list[str]] = defaultdict(list)
        for name, value in lookups.attributes:
            if (org, name, value) not in self.by_attribute.ids:
                by_name[name].append(value)
        for name, values in by_name.items():
            self._load_attributes(org, name, values)
        self._load_tags([i for i, r in self.rows.items() if r is not None])

    def _load_phones(self, org: str, phones: list[str]) -> None:
        if phones:
            for phone, rows in self.store.find_contacts_by_phones(org, phones).items():
                self.by_phone.fill((org, phone), self._adopt(rows), self.rows, self._dirty())

    def _load_emails(self, org: str, emails: list[str]) -> None:
        if emails:
            found = self.store.find_contacts_by_emails(org, emails)
            for email in emails:
                ids = self._adopt([found[email]]) if email in found else []
                self.by_email.fill((org, email), ids, self.rows, self._dirty())

    def _load_ids(self, org: str, ids: list[str]) -> None:
        if ids:
            found = self.store.get_contacts(org, ids)
            self._adopt(found.values())
            for contact_id in ids:
                self.rows.setdefault(contact_id, None)

    def _load_attributes(self, org: str, name: str, values: list[str]) -> None:
        for value, rows in self.store.find_contacts_by_attributes(org, name, values).items():
            self.by_attribute.fill((org, name, value), self._adopt(rows), self.rows, self._dirty())

    def _load_tags(self, ids: list[str]) -> None:
        missing = [i for i in ids if i not in self.tags]
        if missing:
            found = self.store.tags_for(missing)
            for contact_id in missing:
                self.tags[contact_id] = list(found.get(contact_id, []))
                self.db_tags[contact_id] = frozenset(self.tags[contact_id])

    def _found(self, lookup: _Lookup, key: tuple, load: Callable[[], None]) -> list[Row]:
        if key not in lookup.ids:
            load()
        return [_copy(self.rows[i]) for i in lookup.ids[key]]

    def get_contact(self, org_id: str, contact_id: str) -> Row | None:
        if contact_id not in self.rows:
            self._load_ids(org_id, [contact_id])
        row = self.rows[contact_id]
        return _copy(row) if row is not None and row["org_id"] == org_id else None

    def find_contact_by_email(self, org_id: str, email_normalized: str) -> Row | None:
        key = (org_id, email_normalized)
        found = self._found(self.by_email, key, lambda: self._load_emails(org_id, [email_normalized]))
        return _oldest_first(found)[0] if found else None

    def find_contacts_by_phone(self, org_id: str, phone: str) -> list[Row]:
        key = (org_id, phone)
        return _oldest_first(self._found(self.by_phone, key, lambda: self._load_phones(org_id, [phone])))

    def find_contacts_by_attribute(self, org_id: str, name: str, value: str) -> list[Row]:
        key = (org_id, name, value)
        load = lambda: self._load_attributes(org_id, name, [value])  # noqa: E731
        return _oldest_first(self._found(self.by_attribute, key, load))

    def tags_for(self, contact_ids: list[str]) -> dict[str, list[str]]:
        self._load_tags([i for i in contact_ids if i not in self.inserted])
        found: dict[str, list[str]] = defaultdict(list)
        for contact_id in contact_ids:
            if self.tags.get(contact_id):
                found[contact_id] = list(self.tags[contact_id])
        return found

    # Writing ---------------------------------------------------------------------------------

    def _reindex(self, contact_id: str, before: Row | None, after: Row | None) -> None:
        for lookup in (self.by_phone, self.by_email, self.by_attribute):
            lookup.move(contact_id, before, after)

    def insert_contact(self, row: Row) -> None:
        contact_id = row["id"]
        stored = _copy(row)
        self.rows[contact_id] = stored
        self.inserted[contact_id] = stored
        self.tags[contact_id] = []
        self._reindex(contact_id, None, stored)
        self.staging.enrollments.new_contact(contact_id)

        def undo() -> None:
            self._reindex(contact_id, stored, None)
            del self.rows[contact_id], self.inserted[contact_id], self.tags[contact_id]
            self.staging.enrollments.forget_contact(contact_id)

        self.staging.undo.append(undo)

    def update_contact(self, org_id: str, contact_id: str, values: dict[str, Any]) -> bool:
        if self.get_contact(org_id, contact_id) is None:
            return False
        row = self.rows[contact_id]
        before, pending = dict(row), self.updated.get(contact_id)
        row.update(_copy(values))
        if contact_id not in self.inserted:
            self.updated[contact_id] = {**(pending or {}), **_copy(values)}
        self._reindex(contact_id, before, row)

        def undo() -> None:
            self._reindex(contact_id, row, before)
            row.clear()
            row.update(before)
            if contact_id not in self.inserted:
                if pending is None:
                    del self.updated[contact_id]
                else:
                    self.updated[contact_id] = pending

        self.staging.undo.append(undo)
        return True

    def add_tags(self, org_id: str, contact_id: str, tags: Iterable[str]) -> list[str]:
        existing = self.tags_for([contact_id]).get(contact_id, [])
        new = sorted(set(tags) - set(existing))
        if new:
            self._set_tags(contact_id, sorted({*existing, *new}))
        return new

    def remove_tags(self, contact_id: str, tags: Iterable[str]) -> None:
        self._load_tags([contact_id] if contact_id not in self.inserted else [])
        gone = set(tags)
        if gone & set(self.tags.get(contact_id, [])):
            self._set_tags(contact_id, [t for t in self.tags[contact_id] if t not in gone])

    def _set_tags(self, contact_id: str, tags: list[str]) -> None:
        before = self.tags[contact_id]
        self.tags[contact_id] = tags
        self.staging.undo.append(lambda: self.tags.__setitem__(contact_id, before))

    def flush(self) -> None:
        # Changes to stored rows first: one may free an email a new contact takes.
        if self.updated:
            org_of = {i: self.rows[i]["org_id"] for i in self.updated}
            self.store.update_contacts([{"id": i, "org_id": org_of[i], **v} for i, v in self.updated.items()])
        if self.inserted:
            self.store.insert_contacts(list(self.inserted.values()))
        added, removed = [], []
        for contact_id, tags in self.tags.items():
            before = self.db_tags.get(contact_id, frozenset())
            if contact_id in self.inserted or set(tags) != before:
                org_id = self.rows[contact_id]["org_id"]
                added += [
                    {"contact_id": contact_id, "org_id": org_id, "tag": t} for t in tags if t not in before
                ]
                removed += [(contact_id, t) for t in before if t not in tags]
        self.store.remove_tag_pairs(removed)
        if added:
            self.store.add_tag_rows(added)
        for contact_id, tags in self.tags.items():
            self.db_tags[contact_id] = frozenset(tags)
        self.inserted.clear()
        self.updated.clear()


class StagedEnrollments(_Unsupported):
    """Enrollments and their tasks, as :class:`EnrollmentStore` offers them to enrolling and
    unenrolling."""

    def __init__(self, staging: Staging) -> None:
        self.staging = staging
        self.store = EnrollmentStore(staging.conn)
        self.rows: dict[str, Row] = {}
        #: Each loaded contact's live enrollments (complete for the contacts it holds).
        self.live: dict[str, set[str]] = {}
        #: Each loaded enrollment's pending and paused tasks in the database, not yet cancelled.
        self.cancellable: dict[str, list[int]] = {}
        self.inserted: dict[str, Row] = {}
        self.updated: dict[str, dict[str, Any]] = {}
        self.new_tasks: list[Row] = []
        self.cancels: list[tuple[str, Any, str]] = []

    # Reading ---------------------------------------------------------------------------------

    def prefetch_for_contacts(self, contact_ids: list[str], *, tasks: bool) -> None:
        self._load_contacts([c for c in contact_ids if c not in self.live])
        if tasks:
            self._load_tasks([e for e in self.rows if e not in self.cancellable and e not in self.inserted])

    def _load_contacts(self, contact_ids: list[str]) -> None:
        if not contact_ids:
            return
        wanted = set(contact_ids)
        for contact_id in wanted:
            self.live[contact_id] = set()
        for row in self.store.live_enrollments_for_contacts(contact_ids):
            self.rows.setdefault(row["id"], row)
        for enrollment_id, row in self.rows.items():
            if row["contact_id"] in wanted and row["status"] in LIVE:
                self.live[row["contact_id"]].add(enrollment_id)

    def _load_tasks(self, enrollment_ids: list[str]) -> None:
        if enrollment_ids:
            self.cancellable.update(self.store.cancellable_tasks(enrollment_ids))

    def _row(self, enrollment_id: str) -> Row | None:
        if enrollment_id not in self.rows:
            found = self.store.get_enrollments([enrollment_id]).get(enrollment_id)
            if found is None:
                return None
            self.rows[enrollment_id] = found
        return self.rows[enrollment_id]

    def new_contact(self, contact_id: str) -> None:
        self.live[contact_id] = set()  # a contact created in this batch has no enrollment yet

    def forget_contact(self, contact_id: str) -> None:
        self.live.pop(contact_id, None)

    def _live_of(self, contact_id: str) -> list[Row]:
        if contact_id not in self.live:
            self._load_contacts([contact_id])
        rows = [self.rows[i] for i in self.live[contact_id]]
        return sorted(rows, key=lambda r: (r["enrolled_at"], r["id"]))

    def get_enrollment(self, org_id: str, enrollment_id: str, sequence_id: str | None = None) -> Row | None:
        row = self._row(enrollment_id)
        if (
            row is None
            or row["org_id"] != org_id
            or (sequence_id is not None and row["sequence_id"] != sequence_id)
        ):
            return None
        return dict(row)

    def find_live_enrollment(self, sequence_id: str, contact_id: str) -> Row | None:
        return next((dict(r) for r in self._live_of(contact_id) if r["sequence_id"] == sequence_id), None)

    def live_enrollments_for_contact(self, org_id: str, contact_id: str) -> list[Row]:
        return [dict(r) for r in self._live_of(contact_id) if r["org_id"] == org_id]

    # Writing ---------------------------------------------------------------------------------

    def _track_live(self, row: Row) -> None:
        """Keep the contact's live set in step with the row's status."""
        live = self.live.get(row["contact_id"])
        if live is not None:
            (live.add if row["status"] in LIVE else live.discard)(row["id"])

    def insert_enrollments(self, rows: list[Row]) -> None:
        added = [dict(r) for r in rows]
        for row in added:
            self.rows[row["id"]] = row
            self.inserted[row["id"]] = row
            self.cancellable[row["id"]] = []
            self._track_live(row)

        def undo() -> None:
            for row in added:
                del self.rows[row["id"]], self.inserted[row["id"]], self.cancellable[row["id"]]
                if row["contact_id"] in self.live:
                    self.live[row["contact_id"]].discard(row["id"])

        self.staging.undo.append(undo)

    def insert_tasks(self, rows: list[Row]) -> None:
        count = len(self.new_tasks)
        self.new_tasks.extend(dict(r) for r in rows)
        self.staging.undo.append(lambda: self.new_tasks.__delitem__(slice(count, None)))

    def update_enrollment(self, enrollment_id: str, values: dict[str, Any]) -> None:
        row = self._row(enrollment_id)
        if row is None:
            return
        before, pending = dict(row), self.updated.get(enrollment_id)
        row.update(values)
        if enrollment_id not in self.inserted:
            self.updated[enrollment_id] = {**(pending or {}), **values}
        self._track_live(row)

        def undo() -> None:
            row.clear()
            row.update(before)
            self._track_live(row)
            if enrollment_id not in self.inserted:
                if pending is None:
                    del self.updated[enrollment_id]
                else:
                    self.updated[enrollment_id] = pending

        self.staging.undo.append(undo)

    def cancel_open_tasks(self, enrollment_id: str, now, reason: str) -> int:
        if enrollment_id not in self.cancellable:
            self._load_tasks([enrollment_id])
        held = self.cancellable[enrollment_id]
        fresh = [
            t
            for t in self.new_tasks
            if t["enrollment_id"] == enrollment_id and t["status"] in ("pending", "paused")
        ]
        before = [(t, dict(t)) for t in fresh]
        for task in fresh:
            task.update(status="cancelled", last_error=reason, updated_at=now, finished_at=now)
        self.cancellable[enrollment_id] = []
        if held:
            self.cancels.append((enrollment_id, now, reason))

        def undo() -> None:
            for task, saved in before:
                task.clear()
                task.update(saved)
            self.cancellable[enrollment_id] = held
            if held:
                self.cancels.pop()

        self.staging.undo.append(undo)
        return len(held) + len(fresh)

    def flush(self) -> None:
        # Ending stored enrollments first: a contact may be enrolled again in the same batch, and
        # only one live enrollment per sequence may exist at a time.
        if self.updated:
            self.store.update_enrollments([{"id": i, **v} for i, v in self.updated.items()])
        grouped: dict[tuple[Any, str], list[str]] = defaultdict(list)
        for enrollment_id, now, reason in self.cancels:
            grouped[(now, reason)].append(enrollment_id)
        for (now, reason), ids in grouped.items():
            self.store.cancel_tasks_of(ids, now, reason)
        if self.inserted:
            self.store.insert_enrollments(list(self.inserted.values()))
        if self.new_tasks:
            self.store.insert_tasks(self.new_tasks)
        self.inserted.clear()
        self.updated.clear()
        self.new_tasks = []
        self.cancels = []


@dataclass
class _SequenceCache:
    by_id: dict[tuple[str, str, str], Row | None] = field(default_factory=dict)
    by_name: dict[tuple[str, str, str], list[str]] = field(default_factory=dict)
    steps: dict[str, list[Row]] = field(default_factory=dict)
    triggered: dict[tuple[str, str, str], list[Row]] = field(default_factory=dict)


class StagedSequences(_Unsupported):
    """Sequences and their steps, read-only, read once per batch."""

    def __init__(self, staging: Staging) -> None:
        self.store = SequenceStore(staging.conn)
        self.cache = _SequenceCache()

    def prefetch(self, org_id: str, refs: list[str], triggers: tuple[str, ...] = ()) -> None:
        """Read the sequences and queues named (by id or name), the active sequences that the
        ``triggers`` start, and all of their steps: at most three queries."""
        refs = [
            r
            for r in refs
            if not any((org_id, r, k) in self.cache.by_id for k in ("sequence", "event_queue"))
        ]
        rows = self.store.find_sequences(org_id, refs) if refs else []
        for ref in refs:
            for kind in ("sequence", "event_queue"):
                self.cache.by_id[(org_id, ref, kind)] = next(
                    (r for r in rows if r["id"] == ref and r["kind"] == kind), None
                )
                self.cache.by_name[(org_id, ref, kind)] = [
                    r["id"] for r in rows if r["name"] == ref and r["kind"] == kind
                ]
        for row in rows:
            self.cache.by_id[(org_id, row["id"], row["kind"])] = row
        triggers = tuple(t for t in triggers if (org_id, "sequence", t) not in self.cache.triggered)
        if triggers:
            started = self.store.find_triggered_sequences_of(org_id, "sequence", triggers)
            for trigger in triggers:
                self.cache.triggered[(org_id, "sequence", trigger)] = [
                    r for r in started if r["trigger_type"] == trigger
                ]
            rows = [*rows, *started]
        self._load_steps([r["id"] for r in rows])

    def _load_steps(self, sequence_ids: list[str]) -> None:
        missing = [s for s in sequence_ids if s not in self.cache.steps]
        if missing:
            for sequence_id in missing:
                self.cache.steps[sequence_id] = []
            for step in self.store.list_steps(missing):
                self.cache.steps[step["sequence_id"]].append(step)

    def get_sequence(
        self, org_id: str, sequence_id: str, kind: str, *, for_update: bool = False
    ) -> Row | None:
        if for_update:
            raise NotStaged("a locked sequence read is not staged")
        key = (org_id, sequence_id, kind)
        if key not in self.cache.by_id:
            self.cache.by_id[key] = self.store.get_sequence(org_id, sequence_id, kind)
        row = self.cache.by_id[key]
        return dict(row) if row is not None else None

    def find_sequence_ids_by_name(self, org_id: str, name: str, kind: str) -> list[str]:
        key = (org_id, name, kind)
        if key not in self.cache.by_name:
            self.cache.by_name[key] = self.store.find_sequence_ids_by_name(org_id, name, kind)
        return list(self.cache.by_name[key])

    def list_steps(self, sequence_ids: list[str]) -> list[Row]:
        self._load_steps(sequence_ids)
        return [dict(s) for sequence_id in sequence_ids for s in self.cache.steps[sequence_id]]

    def count_steps(self, sequence_id: str) -> int:
        self._load_steps([sequence_id])
        return len(self.cache.steps[sequence_id])

    def find_triggered_sequences(self, org_id: str, kind: str, trigger_type: str) -> list[Row]:
        key = (org_id, kind, trigger_type)
        if key not in self.cache.triggered:
            self.cache.triggered[key] = self.store.find_triggered_sequences(org_id, kind, trigger_type)
        return [dict(r) for r in self.cache.triggered[key]]


class StagedCompanies(_Unsupported):
    """Companies, read-only (a contact's company reference is checked against them)."""

    def __init__(self, staging: Staging) -> None:
        self.store = CompanyStore(staging.conn)
        self.cache: dict[tuple[str, str], Row | None] = {}

    def get_company(self, org_id: str, company_id: str) -> Row | None:
        key = (org_id, company_id)
        if key not in self.cache:
            self.cache[key] = self.store.get_company(org_id, company_id)
        row = self.cache[key]
        return dict(row) if row is not None else None

"""Enrollments and their tasks, staged: each loaded contact's live enrollments (complete), the
tasks an end would cancel, and the writes, held."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

from seqbridge.storage.enrollments import LIVE, EnrollmentStore
from seqbridge.storage.staged.base import Row, Unsupported, update_held, update_held_many

if TYPE_CHECKING:
    from seqbridge.storage.staged import Staging


class StagedEnrollments(Unsupported):
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
        update_held(
            self.staging,
            row,
            values,
            held=self.updated,
            inserted=self.inserted,
            changed=lambda _before, after: self._track_live(after),
        )

    def update_enrollments(self, rows: list[Row]) -> None:
        """Change many enrollments at once (an unenroll ends all of a contact's), with one undo."""
        changes = []
        for given in rows:
            row = self._row(given["id"])
            if row is not None:
                changes.append((row, {k: v for k, v in given.items() if k != "id"}))
        update_held_many(
            self.staging,
            changes,
            held=self.updated,
            inserted=self.inserted,
            changed=lambda _before, after: self._track_live(after),
        )

    def cancel_tasks_counted(self, enrollment_ids: list[str], now, reason: str) -> dict[str, int]:
        return {e: self.cancel_open_tasks(e, now, reason) for e in enrollment_ids}

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

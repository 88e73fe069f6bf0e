"""Enrollments and their step tasks (the scheduled step executions the processor claims)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, insert, literal_column, select, update
from sqlalchemy.engine import Connection

from seqbridge.storage.bulk import bulk_insert, update_rows
from seqbridge.storage.schema import bulk_enroll_passes, contacts, enrollments, sequences, step_tasks

LIVE = ("active", "paused")
#: Task statuses that still hold future work.
OPEN_TASK_STATUSES = ("pending", "paused", "leased")
#: A task's status as a value, not an index key, where the tasks are picked by enrollment: the
#: enrollment's index must drive. Without statistics (a new database, or one that grew since its
#: last ANALYZE) SQLite chose ix_step_tasks_due for ``status IN (...)`` and walked every pending
#: task of the database for each statement (bench.drain's big organization).
_TASK_STATUS = step_tasks.c.status.concat(literal_column("''"))

_CONTACT_SUMMARY = (
    contacts.c.email.label("contact_email"),
    contacts.c.first_name.label("contact_first_name"),
    contacts.c.last_name.label("contact_last_name"),
    contacts.c.phone.label("contact_phone"),
    contacts.c.status.label("contact_status"),
)


class EnrollmentStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def insert_enrollments(self, rows: list[dict[str, Any]]) -> None:
        bulk_insert(self.conn, enrollments, rows)

    def get_enrollment(self, org_id: str, enrollment_id: str, sequence_id: str | None = None):
        query = select(enrollments).where(enrollments.c.org_id == org_id, enrollments.c.id == enrollment_id)
        if sequence_id is not None:
            query = query.where(enrollments.c.sequence_id == sequence_id)
        row = self.conn.execute(query).mappings().first()
        return dict(row) if row else None

    def find_live_enrollment(self, sequence_id: str, contact_id: str) -> dict[str, Any] | None:
        query = select(enrollments).where(
            enrollments.c.sequence_id == sequence_id,
            enrollments.c.contact_id == contact_id,
            enrollments.c.status.in_(LIVE),
        )
        row = self.conn.execute(query).mappings().first()
        return dict(row) if row else None

    def live_contact_ids(self, sequence_id: str, contact_ids: list[str]) -> set[str]:
        """Which of ``contact_ids`` have a live enrollment in the sequence (one query)."""
        if not contact_ids:
            return set()
        query = select(enrollments.c.contact_id).where(
            enrollments.c.sequence_id == sequence_id,
            enrollments.c.status.in_(LIVE),
            enrollments.c.contact_id.in_(contact_ids),
        )
        return set(self.conn.execute(query).scalars())

    def list_enrollments(
        self, org_id: str, sequence_id: str, status: str | None, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        """A page of enrollments, each joined with its contact's summary."""
        base = select(enrollments).where(
            enrollments.c.org_id == org_id, enrollments.c.sequence_id == sequence_id
        )
        if status is not None:
            base = base.where(enrollments.c.status == status)
        total = self.conn.execute(select(func.count()).select_from(base.subquery())).scalar_one()
        query = (
            base.add_columns(*_CONTACT_SUMMARY)
            .join(contacts, contacts.c.id == enrollments.c.contact_id)
            .order_by(enrollments.c.enrolled_at, enrollments.c.id)
            .limit(limit)
            .offset(offset)
        )
        return [dict(r) for r in self.conn.execute(query).mappings()], total

    def update_enrollment(self, enrollment_id: str, values: dict[str, Any]) -> None:
        self.conn.execute(update(enrollments).where(enrollments.c.id == enrollment_id).values(**values))

    def live_enrollments_for_contact(self, org_id: str, contact_id: str) -> list[dict[str, Any]]:
        """The contact's active and paused enrollments, oldest first."""
        query = (
            select(enrollments)
            .where(
                enrollments.c.org_id == org_id,
                enrollments.c.contact_id == contact_id,
                enrollments.c.status.in_(LIVE),
            )
            .order_by(enrollments.c.enrolled_at, enrollments.c.id)
        )
        return [dict(r) for r in self.conn.execute(query).mappings()]

    def live_enrollments_for_contacts(self, contact_ids: list[str]) -> list[dict[str, Any]]:
        """The active and paused enrollments of these contacts, oldest first (one query)."""
        if not contact_ids:
            return []
        query = (
            select(enrollments)
            .where(enrollments.c.contact_id.in_(contact_ids), enrollments.c.status.in_(LIVE))
            .order_by(enrollments.c.enrolled_at, enrollments.c.id)
        )
        return [dict(r) for r in self.conn.execute(query).mappings()]

    def get_enrollments(self, enrollment_ids: list[str]) -> dict[str, dict[str, Any]]:
        """These enrollments, by id (one query)."""
        if not enrollment_ids:
            return {}
        query = select(enrollments).where(enrollments.c.id.in_(enrollment_ids))
        return {r["id"]: dict(r) for r in self.conn.execute(query).mappings()}

    def update_enrollments(self, rows: list[dict[str, Any]]) -> None:
        """Write many enrollments' changed columns (``{"id", column: value, …}``) in as few
        statements as the values allow."""
        update_rows(self.conn, enrollments, rows)

    # Tasks ------------------------------------------------------------------------------

    def insert_tasks(self, rows: list[dict[str, Any]]) -> None:
        bulk_insert(self.conn, step_tasks, rows)

    def open_tasks(self, enrollment_id: str) -> list[dict[str, Any]]:
        query = (
            select(step_tasks)
            .where(step_tasks.c.enrollment_id == enrollment_id, _TASK_STATUS.in_(OPEN_TASK_STATUSES))
            .order_by(step_tasks.c.id)
        )
        return [dict(r) for r in self.conn.execute(query).mappings()]

    def open_tasks_for_step(self, sequence_id: str, step_id: str) -> list[dict[str, Any]]:
        query = select(step_tasks).where(
            step_tasks.c.sequence_id == sequence_id,
            step_tasks.c.step_id == step_id,
            step_tasks.c.status.in_(("pending", "paused")),
        )
        return [dict(r) for r in self.conn.execute(query).mappings()]

    def count_live(self, sequence_id: str) -> int:
        query = select(func.count()).where(
            enrollments.c.sequence_id == sequence_id, enrollments.c.status.in_(LIVE)
        )
        return self.conn.execute(query).scalar_one()

    def update_task(self, task_id: int, values: dict[str, Any]) -> None:
        self.conn.execute(update(step_tasks).where(step_tasks.c.id == task_id).values(**values))

    def end_all_live(self, sequence_id: str, status: str, reason: str, now) -> int:
        """End every live enrollment of a sequence and cancel their pending tasks; return tasks cancelled."""
        stamp = "exited_at" if status == "exited" else "completed_at"
        self.conn.execute(
            update(enrollments)
            .where(enrollments.c.sequence_id == sequence_id, enrollments.c.status.in_(LIVE))
            .values(
                status=status,
                exit_reason=reason,
                next_send_at=None,
                current_step_id=None,
                paused_at=None,
                updated_at=now,
                **{stamp: now},
            )
        )
        result = self.conn.execute(
            update(step_tasks)
            .where(step_tasks.c.sequence_id == sequence_id, step_tasks.c.status.in_(("pending", "paused")))
            .values(status="cancelled", last_error=reason, updated_at=now, finished_at=now)
        )
        return result.rowcount

    def list_tasks(
        self,
        org_id: str,
        sequence_id: str,
        statuses: tuple[str, ...] | None,
        after_id: int | None,
        limit: int,
    ) -> list[dict[str, Any]]:
        """Tasks of a sequence in id order (ids only grow, so pages stay stable while tasks are
        added), joined with their enrollment's anchor and linked entities."""
        query = (
            select(
                step_tasks,
                enrollments.c.enrollment_time,
                enrollments.c.company_id,
                enrollments.c.deal_id,
                enrollments.c.status.label("enrollment_status"),
            )
            .join(enrollments, enrollments.c.id == step_tasks.c.enrollment_id)
            .where(step_tasks.c.org_id == org_id, step_tasks.c.sequence_id == sequence_id)
        )
        if statuses:
            query = query.where(step_tasks.c.status.in_(statuses))
        if after_id is not None:
            query = query.where(step_tasks.c.id > after_id)
        return [dict(r) for r in self.conn.execute(query.order_by(step_tasks.c.id).limit(limit)).mappings()]

    def cancellable_tasks(self, enrollment_ids: list[str]) -> dict[str, list[int]]:
        """The pending and paused tasks of these enrollments (what :meth:`cancel_open_tasks`
        would cancel), by enrollment, locked on PostgreSQL until the transaction ends."""
        found: dict[str, list[int]] = {e: [] for e in enrollment_ids}
        if enrollment_ids:
            query = select(step_tasks.c.id, step_tasks.c.enrollment_id).where(
                step_tasks.c.enrollment_id.in_(enrollment_ids), _TASK_STATUS.in_(("pending", "paused"))
            )
            if self.conn.dialect.name == "postgresql":
                query = query.with_for_update()
            for task_id, enrollment_id in self.conn.execute(query.order_by(step_tasks.c.id)):
                found[enrollment_id].append(task_id)
        return found

    def cancel_tasks_of(self, enrollment_ids: list[str], now, reason: str) -> int:
        """Cancel whatever is still scheduled for these enrollments, in one statement."""
        if not enrollment_ids:
            return 0
        result = self.conn.execute(
            update(step_tasks)
            .where(step_tasks.c.enrollment_id.in_(enrollment_ids), _TASK_STATUS.in_(("pending", "paused")))
            .values(status="cancelled", last_error=reason, updated_at=now, finished_at=now)
        )
        return result.rowcount

    def cancel_tasks_counted(self, enrollment_ids: list[str], now, reason: str) -> dict[str, int]:
        """Cancel whatever is still scheduled for these enrollments, in one statement; return
        how many tasks each had."""
        counts = dict.fromkeys(enrollment_ids, 0)
        if enrollment_ids:
            result = self.conn.execute(
                update(step_tasks)
                .where(
                    step_tasks.c.enrollment_id.in_(enrollment_ids),
                    _TASK_STATUS.in_(("pending", "paused")),
                )
                .values(status="cancelled", last_error=reason, updated_at=now, finished_at=now)
                .returning(step_tasks.c.enrollment_id)
            )
            for enrollment_id in result.scalars():
                counts[enrollment_id] += 1
        return counts

    def cancel_open_tasks(self, enrollment_id: str, now, reason: str) -> int:
        """Cancel whatever is still scheduled for the enrollment; return how many tasks."""
        result = self.conn.execute(
            update(step_tasks)
            .where(step_tasks.c.enrollment_id == enrollment_id, _TASK_STATUS.in_(("pending", "paused")))
            .values(status="cancelled", last_error=reason, updated_at=now, finished_at=now)
        )
        return result.rowcount

    # Filter bulk-enroll passes ---------------------------------------------------------------------

    def lock_pass(self, org_id: str, sequence_id: str, pass_key: str, now) -> dict[str, Any]:
        """The pass ``pass_key`` of a queue, created (at the start) if there is none, and locked
        until this transaction ends, so two calls with the same body take two pages, not one."""
        key = {"sequence_id": sequence_id, "pass_key": pass_key}
        query = select(bulk_enroll_passes).where(*(bulk_enroll_passes.c[k] == v for k, v in key.items()))
        if self.conn.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            row = {**key, "org_id": org_id, "after_contact_id": None, "updated_at": now}
            self.conn.execute(pg_insert(bulk_enroll_passes).values(**row).on_conflict_do_nothing())
            return dict(self.conn.execute(query.with_for_update()).mappings().one())
        # SQLite: the write transaction (BEGIN IMMEDIATE) already serialises the calls.
        found = self.conn.execute(query).mappings().first()
        if found is None:
            found = {**key, "org_id": org_id, "after_contact_id": None, "updated_at": now}
            self.conn.execute(insert(bulk_enroll_passes).values(**found))
        return dict(found)

    def move_pass(self, sequence_id: str, pass_key: str, after_contact_id: str, now) -> None:
        """Record that the pass has handled every matching contact up to ``after_contact_id``."""
        self.conn.execute(
            update(bulk_enroll_passes)
            .where(bulk_enroll_passes.c.sequence_id == sequence_id, bulk_enroll_passes.c.pass_key == pass_key)
            .values(after_contact_id=after_contact_id, updated_at=now)
        )

    def end_pass(self, sequence_id: str, pass_key: str) -> None:
        """The pass reached the end: the same body next time starts a new one."""
        self.conn.execute(
            delete(bulk_enroll_passes).where(
                bulk_enroll_passes.c.sequence_id == sequence_id, bulk_enroll_passes.c.pass_key == pass_key
            )
        )

    # The console -----------------------------------------------------------------------------

    def status_counts(self, sequence_id: str) -> dict[str, int]:
        """How many enrollments the sequence has in each status (ix_enrollments_sequence_status)."""
        query = (
            select(enrollments.c.status, func.count())
            .where(enrollments.c.sequence_id == sequence_id)
            .group_by(enrollments.c.status)
        )
        return {status: int(n) for status, n in self.conn.execute(query)}

    def enrollments_of_contact(self, org_id: str, contact_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """The contact's enrollments in sequences and queues alike, newest first, with the
        sequence's name and kind (ix_enrollments_contact)."""
        query = (
            select(
                enrollments, sequences.c.name.label("sequence_name"), sequences.c.kind.label("sequence_kind")
            )
            .join(sequences, sequences.c.id == enrollments.c.sequence_id)
            .where(enrollments.c.org_id == org_id, enrollments.c.contact_id == contact_id)
            .order_by(enrollments.c.enrolled_at.desc())
            .limit(limit)
        )
        return [dict(r) for r in self.conn.execute(query).mappings()]

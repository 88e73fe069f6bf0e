"""The step processor's queries: claim due tasks under a lease, extend, release, finish, retry,
record sends in the outbox. The worker never writes SQL; it calls these.

Claims take ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so any number of workers share the work
without waiting on each other; on SQLite the write transaction (BEGIN IMMEDIATE) serialises
claims. ``now`` is always a parameter, so tests drive time.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.engine import Connection

from seqbridge.storage.bulk import bulk_insert
from seqbridge.storage.enrollments import OPEN_TASK_STATUSES
from seqbridge.storage.schema import (
    contacts,
    enrollments,
    outbox,
    sequence_steps,
    sequences,
    step_tasks,
    workers,
)

#: Everything the processor needs to run a task, read in one joined query.
_TASK_CONTEXT = (
    step_tasks,
    enrollments.c.status.label("enrollment_status"),
    enrollments.c.enrollment_time,
    enrollments.c.enrollment_data,
    sequences.c.kind.label("sequence_kind"),
    sequences.c.name.label("sequence_name"),
    sequences.c.status.label("sequence_status"),
    sequences.c.from_email,
    sequences.c.from_name,
    sequences.c.reply_to_email,
    sequences.c.send_window,
    sequence_steps.c.action,
    sequence_steps.c.subject,
    sequence_steps.c.body,
    sequence_steps.c.webhook_url,
    sequence_steps.c.config.label("step_config"),
)


class ProcessorStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def reclaim_expired_leases(self, now: datetime) -> int:
        """Put tasks whose worker stopped heartbeating back in the queue; return how many."""
        result = self.conn.execute(
            update(step_tasks)
            .where(step_tasks.c.status == "leased", step_tasks.c.lease_expires_at < now)
            .values(status="pending", lease_owner=None, lease_expires_at=None, updated_at=now)
        )
        return result.rowcount

    def claim_due_tasks(self, now: datetime, worker_id: str, lease_until: datetime, limit: int) -> list[int]:
        """Lease up to ``limit`` due tasks of active sequences, oldest first; return their ids.

        A paused or archived sequence holds its tasks (they stay pending and are due again the
        moment it is active).
        """
        due = (
            select(step_tasks.c.id)
            .where(
                step_tasks.c.status == "pending",
                step_tasks.c.scheduled_for <= now,
                step_tasks.c.sequence_id.in_(
                    select(sequences.c.id).where(
                        sequences.c.status == "active", sequences.c.deleted_at.is_(None)
                    )
                ),
            )
            .order_by(step_tasks.c.scheduled_for, step_tasks.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True, of=step_tasks)
        )
        ids = list(self.conn.execute(due).scalars())
        if ids:
            self.conn.execute(
                update(step_tasks)
                .where(step_tasks.c.id.in_(ids))
                .values(
                    status="leased",
                    lease_owner=worker_id,
                    lease_expires_at=lease_until,
                    attempts=step_tasks.c.attempts + 1,
                    updated_at=now,
                )
            )
        return ids

    def load_tasks(self, task_ids: list[int]) -> list[dict[str, Any]]:
        """Each task with its enrollment, sequence and step (the step may have been deleted)."""
        if not task_ids:
            return []
        query = (
            select(*_TASK_CONTEXT)
            .join(enrollments, enrollments.c.id == step_tasks.c.enrollment_id)
            .join(sequences, sequences.c.id == step_tasks.c.sequence_id)
            .outerjoin(sequence_steps, sequence_steps.c.id == step_tasks.c.step_id)
            .where(step_tasks.c.id.in_(task_ids))
            .order_by(step_tasks.c.scheduled_for, step_tasks.c.id)
        )
        return [dict(r) for r in self.conn.execute(query).mappings()]

    def load_contacts(self, contact_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The contacts of a batch, by id, in one query."""
        if not contact_ids:
            return {}
        query = select(contacts).where(contacts.c.id.in_(set(contact_ids)))
        return {r["id"]: dict(r) for r in self.conn.execute(query).mappings()}

    def finish_tasks(self, task_ids: list[int], worker_id: str, status: str, now: datetime) -> set[int]:
        """End several leased tasks at once; return the ids this worker still held (the others
        were reclaimed after a lost lease and must not be advanced here)."""
        if not task_ids:
            return set()
        result = self.conn.execute(
            update(step_tasks)
            .where(
                step_tasks.c.id.in_(task_ids),
                step_tasks.c.lease_owner == worker_id,
                step_tasks.c.status == "leased",
            )
            .values(status=status, lease_owner=None, lease_expires_at=None, updated_at=now, finished_at=now)
            .returning(step_tasks.c.id)
        )
        return set(result.scalars())

    def enrollments_with_open_tasks(self, enrollment_ids: list[str]) -> set[str]:
        if not enrollment_ids:
            return set()
        query = (
            select(step_tasks.c.enrollment_id)
            .distinct()
            .where(
                step_tasks.c.enrollment_id.in_(set(enrollment_ids)),
                step_tasks.c.status.in_(("pending", "paused", "leased")),
            )
        )
        return set(self.conn.execute(query).scalars())

    def point_enrollments(self, rows: list[dict[str, Any]], now: datetime) -> None:
        """Set each enrollment's next step and time (``enrollment_id``, ``step_id``, ``at``)."""
        if rows:
            self.conn.execute(
                update(enrollments)
                .where(enrollments.c.id == bindparam("enrollment_id"))
                .values(current_step_id=bindparam("step_id"), next_send_at=bindparam("at"), updated_at=now),
                rows,
            )

    def extend_leases(self, worker_id: str, task_ids: list[int], lease_until: datetime) -> None:
        """Heartbeat: keep holding tasks this worker still has in hand."""
        if task_ids:
            self.conn.execute(
                update(step_tasks)
                .where(
                    step_tasks.c.id.in_(task_ids),
                    step_tasks.c.lease_owner == worker_id,
                    step_tasks.c.status == "leased",
                )
                .values(lease_expires_at=lease_until)
            )

    def release_tasks(self, worker_id: str, task_ids: list[int], now: datetime) -> None:
        """Give back claimed tasks that were not started (a stopping worker)."""
        if task_ids:
            self.conn.execute(
                update(step_tasks)
                .where(
                    step_tasks.c.id.in_(task_ids),
                    step_tasks.c.lease_owner == worker_id,
                    step_tasks.c.status == "leased",
                )
                .values(
                    status="pending",
                    lease_owner=None,
                    lease_expires_at=None,
                    attempts=step_tasks.c.attempts - 1,
                    updated_at=now,
                )
            )

    def finish_task(
        self, task_id: int, worker_id: str, status: str, now: datetime, error: str | None = None
    ) -> bool:
        """End a leased task (done, failed or cancelled). False when the lease was lost: another
        worker owns the task now and this one must not advance anything."""
        result = self.conn.execute(
            update(step_tasks)
            .where(
                step_tasks.c.id == task_id,
                step_tasks.c.lease_owner == worker_id,
                step_tasks.c.status == "leased",
            )
            .values(
                status=status,
                lease_owner=None,
                lease_expires_at=None,
                last_error=error,
                updated_at=now,
                finished_at=now,
            )
        )
        return result.rowcount == 1

    def retry_task(
        self, task_id: int, worker_id: str, at: datetime, now: datetime, error: str | None
    ) -> bool:
        """Put a leased task back to pending, due at ``at`` (a retry, or the next send window)."""
        result = self.conn.execute(
            update(step_tasks)
            .where(
                step_tasks.c.id == task_id,
                step_tasks.c.lease_owner == worker_id,
                step_tasks.c.status == "leased",
            )
            .values(
                status="pending",
                scheduled_for=at,
                lease_owner=None,
                lease_expires_at=None,
                last_error=error,
                updated_at=now,
            )
        )
        return result.rowcount == 1

    def hold_task(self, task_id: int, worker_id: str, now: datetime) -> bool:
        """A leased task whose enrollment was paused meanwhile: paused, due at once on resume."""
        result = self.conn.execute(
            update(step_tasks)
            .where(
                step_tasks.c.id == task_id,
                step_tasks.c.lease_owner == worker_id,
                step_tasks.c.status == "leased",
            )
            .values(
                status="paused",
                scheduled_for=None,
                remaining_seconds=0,
                lease_owner=None,
                lease_expires_at=None,
                updated_at=now,
            )
        )
        return result.rowcount == 1

    def uncount_attempt(self, task_id: int) -> None:
        """A claim that did not try to send (outside the send window) does not use an attempt."""
        self.conn.execute(
            update(step_tasks).where(step_tasks.c.id == task_id).values(attempts=step_tasks.c.attempts - 1)
        )

    # The outbox ---------------------------------------------------------------------------

    def find_sends(self, idempotency_keys: list[str]) -> dict[str, str]:
        """Which of these keys already have a send recorded, with its status."""
        if not idempotency_keys:
            return {}
        query = select(outbox.c.idempotency_key, outbox.c.status).where(
            outbox.c.idempotency_key.in_(idempotency_keys)
        )
        return dict(self.conn.execute(query).all())

    def record_sends(self, rows: list[dict[str, Any]]) -> None:
        bulk_insert(self.conn, outbox, rows)

    def old_outbox_ids(self, org_id: str, created_before: datetime, after_id: int, limit: int) -> list[int]:
        """The organization's next ``limit`` outbox ids after ``after_id`` made before ``created_before``."""
        query = (
            select(outbox.c.id)
            .where(outbox.c.org_id == org_id, outbox.c.id > after_id, outbox.c.created_at < created_before)
            .order_by(outbox.c.id)
            .limit(limit)
        )
        return list(self.conn.execute(query).scalars())

    def delete_outbox(self, ids: list[int]) -> int:
        """Delete these outbox rows, except those whose task is still open: a task that may run
        again looks up its send here (exactly once)."""
        if not ids:
            return 0
        open_task = select(step_tasks.c.id).where(
            step_tasks.c.id == outbox.c.task_id, step_tasks.c.status.in_(OPEN_TASK_STATUSES)
        )
        return self.conn.execute(delete(outbox).where(outbox.c.id.in_(ids), ~open_task.exists())).rowcount

    def list_outbox(
        self, org_id: str, *, channel: str | None, status: str | None, after_id: int | None, limit: int
    ) -> list[dict[str, Any]]:
        """Newest first, keyset-paginated on id."""
        query = select(outbox).where(outbox.c.org_id == org_id)
        if channel:
            query = query.where(outbox.c.channel == channel)
        if status:
            query = query.where(outbox.c.status == status)
        if after_id is not None:
            query = query.where(outbox.c.id < after_id)
        return [
            dict(r) for r in self.conn.execute(query.order_by(outbox.c.id.desc()).limit(limit)).mappings()
        ]

    # Workers and counts -------------------------------------------------------------------

    def heartbeat(self, worker_id: str, now: datetime, processed: int) -> None:
        updated = self.conn.execute(
            update(workers)
            .where(workers.c.id == worker_id)
            .values(heartbeat_at=now, processed=workers.c.processed + processed, stopped_at=None)
        ).rowcount
        if not updated:
            self.conn.execute(
                insert(workers).values(id=worker_id, started_at=now, heartbeat_at=now, processed=processed)
            )

    def worker_stopped(self, worker_id: str, now: datetime) -> None:
        self.conn.execute(update(workers).where(workers.c.id == worker_id).values(stopped_at=now))

    def counts(self, now: datetime) -> dict[str, int]:
        """due, leased, retrying, failed tasks; sent and captured messages; live workers."""

        # Each count reads ix_step_tasks_due (status, scheduled_for): /readyz is polled often and
        # must not scan the whole task history.
        def tasks(*conditions) -> int:
            return self.conn.execute(
                select(func.count()).select_from(step_tasks).where(*conditions)
            ).scalar_one()

        pending = step_tasks.c.status == "pending"
        row = {
            "due": tasks(pending, step_tasks.c.scheduled_for <= now),
            "leased": tasks(step_tasks.c.status == "leased"),
            "retrying": tasks(pending, step_tasks.c.attempts > 0),
            "failed": tasks(step_tasks.c.status == "failed"),
        }
        sent = dict(self.conn.execute(select(outbox.c.status, func.count()).group_by(outbox.c.status)).all())
        live_workers = self.conn.execute(
            select(func.count()).select_from(workers).where(workers.c.stopped_at.is_(None))
        ).scalar_one()
        messages = {
            "sent": int(sent.get("sent", 0)),
            "captured": int(sent.get("captured", 0)),
            "send_failed": int(sent.get("failed", 0)),
        }
        return {**row, **messages, "workers": live_workers}

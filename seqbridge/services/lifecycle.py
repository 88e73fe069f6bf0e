"""An enrollment's lifecycle: the one place its status changes.

    active ⇄ paused                 pause / resume (the remaining delay is kept)
    active, paused → exited         left early, with a reason (unsubscribed, replied, …)
    active, paused → completed      every step ran, or unenrolled through the bot API
    active, paused → failed         a step failed for good

:func:`move` takes enrollments from one status to another: it refuses a move the table does not
hold, writes the enrollments' columns, does what the move means for their tasks (pause them,
reschedule them, cancel them), and records one audit event per enrollment. The API (pause,
resume, exit, unenroll), webhook actions, step edits and the worker (a sequence finished, a
contact no longer eligible, a step failed for good) all go through it, one enrollment or many:
many at once cost one update and one cancelling statement, whatever the store.

:class:`EnrollmentLifecycle` holds the use cases built on it (reading enrollments and their
tasks, pause and resume, exit, unenroll); enrolling is :mod:`seqbridge.services.enrolling`.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from seqbridge.audit import record, tag_for
from seqbridge.context import Caller
from seqbridge.errors import Conflict, NotFound
from seqbridge.services.common import CursorPage, OffsetPage, decode_cursor, encode_cursor
from seqbridge.services.contacts import ContactRef, resolve_contact
from seqbridge.services.sequences import SequenceKind
from seqbridge.storage.tx import Tx

if TYPE_CHECKING:
    from seqbridge.services.scheduling import Scheduler


class EnrollmentStatus(StrEnum):
    ACTIVE = "active"  # steps are scheduled and will be sent
    PAUSED = "paused"  # held; the remaining delay is kept and resumes from now
    COMPLETED = "completed"  # every step ran (or unenrolled through the bot API)
    EXITED = "exited"  # left early, with an exit_reason
    FAILED = "failed"  # a step failed permanently or ran out of retries


LIVE = (EnrollmentStatus.ACTIVE, EnrollmentStatus.PAUSED)
EXIT_REASONS = ("replied", "converted", "unsubscribed", "manual", "bounced")

#: Every move an enrollment may make, and its name in the audit log (``<source>:enrollment:<name>``).
MOVES: dict[tuple[EnrollmentStatus, EnrollmentStatus], str] = {
    (EnrollmentStatus.ACTIVE, EnrollmentStatus.PAUSED): "paused",
    (EnrollmentStatus.PAUSED, EnrollmentStatus.ACTIVE): "resumed",
    **{(live, EnrollmentStatus.EXITED): "exited" for live in LIVE},
    **{(live, EnrollmentStatus.COMPLETED): "completed" for live in LIVE},
    **{(live, EnrollmentStatus.FAILED): "failed" for live in LIVE},
}
#: Why an enrollment completed when no one gave a reason: its last step ran.
ALL_STEPS_SENT = "all steps sent"


class IllegalMove(Conflict):
    """The enrollment cannot make this move from the status it has."""


class EnrollmentEnded(IllegalMove):
    """The enrollment has ended; it cannot move any more."""


def move(
    tx: Tx,
    caller: Caller,
    enrollments: list[dict[str, Any]],
    to: EnrollmentStatus,
    now: datetime,
    *,
    reason: str | None = None,
    note: str | None = None,
    error: str | None = None,
    scheduler: Scheduler | None = None,
) -> dict[str, int]:
    """Move each of ``enrollments`` (rows with ``id``, ``status``, ``sequence_id``,
    ``contact_id``) to ``to``; return how many tasks each move cancelled, by enrollment id.

    ``reason`` is an exit reason (kept as ``exit_reason``: ``unsubscribed``, ``replied``, …);
    ``note`` says why in the audit log only (``all steps sent``); ``error`` is a failed step's.
    Resuming needs the ``scheduler`` (to point the enrollment at its next task). Raises
    :class:`IllegalMove` (:class:`EnrollmentEnded`, ``enrollment_ended``, for one that has
    ended) for a move :data:`MOVES` does not hold, before anything is written.
    """
    to = EnrollmentStatus(to)
    for enrollment in enrollments:
        check_move(enrollment["status"], to)
    if not enrollments:
        return {}
    cancelled = {e["id"]: 0 for e in enrollments}
    if to is EnrollmentStatus.PAUSED:
        for enrollment in enrollments:
            _pause(tx, enrollment, now)
    elif to is EnrollmentStatus.ACTIVE:
        for enrollment in enrollments:
            _resume(tx, enrollment, now, scheduler)
    else:
        cancelled = _end(tx, enrollments, to, now, reason=reason, note=note, error=error)
    for enrollment in enrollments:
        data: dict[str, Any] = {
            "sequence_id": enrollment["sequence_id"],
            "contact_id": enrollment["contact_id"],
        }
        if to is EnrollmentStatus.FAILED:
            data["error"] = (error or "")[:500]
        elif to in (EnrollmentStatus.EXITED, EnrollmentStatus.COMPLETED):
            data.update(reason=reason or note or ALL_STEPS_SENT, tasks_cancelled=cancelled[enrollment["id"]])
        action = MOVES[(EnrollmentStatus(enrollment["status"]), to)]
        record(tx, caller, tag_for(caller, "enrollment", action), "enrollment", enrollment["id"], data, now)
    return cancelled


def check_move(status: str, to: EnrollmentStatus) -> None:
    """Refuse a move :data:`MOVES` does not hold (see :func:`move`)."""
    if (EnrollmentStatus(status), to) in MOVES:
        return
    if EnrollmentStatus(status) not in LIVE:
        raise EnrollmentEnded(
            f"The enrollment has ended ({status}); it cannot be {to}.",
            code="enrollment_ended",
            details={"status": status},
        )
    raise IllegalMove(
        f"An enrollment that is {status} cannot be {to}.",
        code="invalid_transition",
        details={"status": status, "to": str(to)},
    )


def _end(
    tx: Tx,
    enrollments: list[dict[str, Any]],
    to: EnrollmentStatus,
    now: datetime,
    *,
    reason: str | None,
    note: str | None,
    error: str | None,
) -> dict[str, int]:
    """Exit, complete or fail: nothing is scheduled any more, and what was pending is cancelled."""
    values: dict[str, Any] = {
        "status": to.value,
        "next_send_at": None,
        "current_step_id": None,
        "paused_at": None,
        "updated_at": now,
    }
    if to is EnrollmentStatus.FAILED:
        values["last_error"] = error
        why = "enrollment failed"
    else:
        values["exit_reason"] = reason
        values["exited_at" if to is EnrollmentStatus.EXITED else "completed_at"] = now
        why = f"enrollment {to}: {reason or note or ALL_STEPS_SENT}"
    ids = [e["id"] for e in enrollments]
    tx.enrollments.update_enrollments([{"id": i, **values} for i in ids])
    return tx.enrollments.cancel_tasks_counted(ids, now, why)


def _pause(tx: Tx, enrollment: dict[str, Any], now: datetime) -> None:
    """Hold the pending tasks, each keeping what was left of its delay."""
    for task in tx.enrollments.open_tasks(enrollment["id"]):
        if task["status"] != "pending":
            continue
        remaining = max(0, math.ceil((task["scheduled_for"] - now).total_seconds()))
        values = {
            "status": "paused",  # a task's own status
            "remaining_seconds": remaining,
            "scheduled_for": None,
            "updated_at": now,
        }
        tx.enrollments.update_task(task["id"], values)
    values = {
        "status": EnrollmentStatus.PAUSED.value,
        "paused_at": now,
        "next_send_at": None,
        "updated_at": now,
    }
    tx.enrollments.update_enrollment(enrollment["id"], values)


def _resume(tx: Tx, enrollment: dict[str, Any], now: datetime, scheduler: Scheduler | None) -> None:
    """Schedule the held tasks again, each after what was left of its delay."""
    for task in tx.enrollments.open_tasks(enrollment["id"]):
        if task["status"] != "paused":
            continue
        due = now + timedelta(seconds=task["remaining_seconds"] or 0)
        values = {"status": "pending", "scheduled_for": due, "remaining_seconds": None, "updated_at": now}
        tx.enrollments.update_task(task["id"], values)
    tx.enrollments.update_enrollment(
        enrollment["id"], {"status": EnrollmentStatus.ACTIVE.value, "paused_at": None, "updated_at": now}
    )
    if scheduler is not None:
        scheduler.mirror(tx, enrollment["id"], now)


def end_all_in_sequence(tx: Tx, sequence_id: str, to: EnrollmentStatus, reason: str, now: datetime) -> int:
    """End every live enrollment of a sequence being deleted, as ``to`` (an end :data:`MOVES`
    holds from every live status), in two statements whatever their number: the one move not
    made enrollment by enrollment, since the deletion's own audit event says how many ended.
    Return the tasks cancelled."""
    to = EnrollmentStatus(to)
    for status in LIVE:
        check_move(status, to)
    return tx.enrollments.end_all_live(sequence_id, to.value, reason, now)


class EnrollmentLifecycle:
    """The use cases on enrollments that exist: read them and their tasks, pause, resume, exit,
    unenroll. Mixed into :class:`seqbridge.services.enrollment.EnrollmentService` (``db``,
    ``clock``, ``sequences``, ``scheduler``)."""

    # Reading ----------------------------------------------------------------------------

    def list_enrollments(
        self,
        caller: Caller,
        kind: SequenceKind,
        sequence_id: str,
        status: str | None,
        limit: int,
        offset: int,
    ) -> OffsetPage:
        with self.db.transaction(write=False) as tx:
            self.sequences.load(tx, caller, kind, sequence_id)
            rows, total = tx.enrollments.list_enrollments(caller.org_id, sequence_id, status, limit, offset)
        return OffsetPage(rows, total, limit, offset)

    def get_enrollment(
        self, caller: Caller, kind: SequenceKind, sequence_id: str, enrollment_id: str
    ) -> dict:
        with self.db.transaction(write=False) as tx:
            self.sequences.load(tx, caller, kind, sequence_id)
            return _load(tx, caller, sequence_id, enrollment_id)

    def list_tasks(
        self,
        caller: Caller,
        kind: SequenceKind,
        sequence_id: str,
        statuses: tuple[str, ...] | None,
        cursor: str | None,
        limit: int,
    ) -> CursorPage:
        """The scheduled step executions of a sequence or queue, cursor-paginated in creation order."""
        after = decode_cursor(cursor, {"after": int})["after"] if cursor else None
        with self.db.transaction(write=False) as tx:
            self.sequences.load(tx, caller, kind, sequence_id)
            rows = tx.enrollments.list_tasks(caller.org_id, sequence_id, statuses, after, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return CursorPage(rows, limit, encode_cursor({"after": rows[-1]["id"]}) if more else None)

    # Changing ---------------------------------------------------------------------------

    def set_status(
        self, caller: Caller, kind: SequenceKind, sequence_id: str, enrollment_id: str, status: str
    ) -> dict[str, Any]:
        """Pause (keeping the remaining delay) or resume (``next_send_at = now + remaining``).

        Setting the status it already has changes nothing. Raises :class:`EnrollmentEnded` (a
        :class:`Conflict`) for an enrollment that has ended.
        """
        now = self.clock.now()
        with self.db.transaction() as tx:
            self.sequences.load(tx, caller, kind, sequence_id)
            enrollment = _load(tx, caller, sequence_id, enrollment_id)
            if enrollment["status"] == status:
                return enrollment
            move(tx, caller, [enrollment], EnrollmentStatus(status), now, scheduler=self.scheduler)
            return _load(tx, caller, sequence_id, enrollment_id)

    def exit(
        self, caller: Caller, kind: SequenceKind, sequence_id: str, enrollment_id: str, reason: str = "manual"
    ) -> dict[str, Any]:
        """Exit a live enrollment with ``reason`` and cancel whatever is pending. An enrollment that
        has already ended is returned as it is (DELETE is idempotent)."""
        now = self.clock.now()
        with self.db.transaction() as tx:
            self.sequences.load(tx, caller, kind, sequence_id)
            enrollment = _load(tx, caller, sequence_id, enrollment_id)
            if enrollment["status"] not in LIVE:
                return enrollment
            move(tx, caller, [enrollment], EnrollmentStatus.EXITED, now, reason=reason)
            return _load(tx, caller, sequence_id, enrollment_id)

    def unenroll(
        self,
        caller: Caller,
        kind: SequenceKind,
        sequence_id: str,
        ref: ContactRef,
        *,
        status: EnrollmentStatus = EnrollmentStatus.EXITED,
        reason: str = "unenrolled",
    ) -> list[dict[str, Any]]:
        """End every live enrollment the contact has in this sequence (a queue may hold several)
        as ``status`` with ``reason``, cancelling what is pending; return them, oldest first.

        Raises :class:`NotFound` ``not_found`` for an unknown sequence and ``not_enrolled`` when
        the contact has no live enrollment there (an unknown contact included).
        """
        now = self.clock.now()
        with self.db.transaction() as tx:
            self.sequences.load(tx, caller, kind, sequence_id)
            try:
                contact = resolve_contact(tx, caller, ref)
            except NotFound:
                contact = None
            live = (
                [
                    e
                    for e in tx.enrollments.live_enrollments_for_contact(caller.org_id, contact["id"])
                    if e["sequence_id"] == sequence_id
                ]
                if contact
                else []
            )
            if not live:
                raise NotFound("The contact is not actively enrolled here.", code="not_enrolled")
            move(tx, caller, live, status, now, reason=reason)
            return [_load(tx, caller, sequence_id, e["id"]) for e in live]

    def exit_contact(
        self, caller: Caller, contact_id: str, sequence_id: str | None, reason: str
    ) -> list[dict[str, Any]]:
        """Exit the contact's live enrollments with ``reason``, cancelling what is pending: those in
        sequence ``sequence_id``, or with ``None`` every one it has, in sequences and queues alike.
        Return them as they are now, oldest first; none when nothing was live (calling again is safe).

        Raises :class:`NotFound` for an unknown contact or sequence.
        """
        now = self.clock.now()
        with self.db.transaction() as tx:
            if sequence_id is not None:
                self.sequences.load(tx, caller, SequenceKind.SEQUENCE, sequence_id)
            contact = resolve_contact(tx, caller, ContactRef("id", contact_id))
            live = tx.enrollments.live_enrollments_for_contact(caller.org_id, contact["id"])
            if sequence_id is not None:
                live = [e for e in live if e["sequence_id"] == sequence_id]
            move(tx, caller, live, EnrollmentStatus.EXITED, now, reason=reason)
            return [tx.enrollments.get_enrollment(caller.org_id, e["id"]) for e in live]

    def unenroll_everywhere(self, caller: Caller, ref: ContactRef, *, reason: str) -> list[dict[str, Any]]:
        """Exit every live enrollment the contact has, in sequences and queues alike, with
        ``reason``; return them (none for an unknown contact, as :meth:`unenroll` treats one)."""
        now = self.clock.now()
        with self.db.transaction() as tx:
            try:
                contact = resolve_contact(tx, caller, ref)
            except NotFound:
                return []
            live = tx.enrollments.live_enrollments_for_contact(caller.org_id, contact["id"])
            move(tx, caller, live, EnrollmentStatus.EXITED, now, reason=reason)
            return live


def _load(tx: Tx, caller: Caller, sequence_id: str, enrollment_id: str) -> dict[str, Any]:
    enrollment = tx.enrollments.get_enrollment(caller.org_id, enrollment_id, sequence_id)
    if enrollment is None:
        raise NotFound(f"No enrollment with id {enrollment_id} in this sequence.")
    return enrollment

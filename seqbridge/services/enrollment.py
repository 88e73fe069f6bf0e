"""Enrollment: one engine under all three API dialects and the webhook bridge.

Enroll one contact or many, pause, resume, exit, unenroll; the eligibility guardrails; and
auto-enrollment when contacts are created or tagged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy.exc import IntegrityError

from seqbridge.audit import record, record_many, tag_for
from seqbridge.clock import Clock
from seqbridge.errors import BadRequest, Conflict, MissingField, NotFound, Unprocessable
from seqbridge.services.common import OffsetPage, new_id
from seqbridge.services.context import Caller
from seqbridge.services.scheduling import Scheduler
from seqbridge.services.sequences import SequenceKind, SequenceService, SequenceStatus
from seqbridge.storage.db import Database
from seqbridge.storage.tx import Tx


class EnrollmentStatus(StrEnum):
    ACTIVE = "active"  # steps are scheduled and will be sent
    PAUSED = "paused"  # held; the remaining delay is kept and resumes from now
    COMPLETED = "completed"  # every step ran (or unenrolled through the bot API)
    EXITED = "exited"  # left early, with an exit_reason
    FAILED = "failed"  # a step failed permanently or ran out of retries


EXIT_REASONS = ("replied", "converted", "unsubscribed", "manual", "bounced")
MAX_BULK = 1000
_NO_DATA: dict[str, Any] = {}  # shared, never mutated: bulk inserts convert it once
_ENROLLABLE = (SequenceStatus.ACTIVE.value, SequenceStatus.PAUSED.value)


def ineligibility(contact: dict[str, Any]) -> str | None:
    """Why a contact may not be enrolled (``contact_status:unsubscribed``, ...), or None."""
    if contact["status"] != "active":
        return f"contact_status:{contact['status']}"
    if contact["converted"]:
        return "converted_customer"
    if contact.get("has_open_ticket"):
        return "active_ticket:open"
    return None


@dataclass(frozen=True)
class ContactRef:
    """How a caller named a contact: by ``id`` (customer_id / contact_id) or by ``email``."""

    kind: str
    value: str


def contact_ref(body: dict[str, Any]) -> ContactRef:
    """The first identifier present of customer_id, email, contact_id, contactId.

    Raises :class:`MissingField` when none is given.
    """
    for key, kind in (("customer_id", "id"), ("email", "email"), ("contact_id", "id"), ("contactId", "id")):
        value = body.get(key)
        if isinstance(value, str) and value.strip():
            return ContactRef(kind, value.strip())
    raise MissingField(
        "contact_id is required (or customer_id, email, contactId).",
        details={"fields": ["customer_id", "email", "contact_id", "contactId"]},
    )


@dataclass
class BulkResult:
    enrolled: int = 0
    skipped: int = 0
    results: list[dict[str, Any]] = field(default_factory=list)


class EnrollmentService:
    def __init__(self, db: Database, clock: Clock, sequences: SequenceService, scheduler: Scheduler) -> None:
        self.db = db
        self.clock = clock
        self.sequences = sequences
        self.scheduler = scheduler

    # Enrolling --------------------------------------------------------------------------

    def enroll(
        self,
        caller: Caller,
        kind: SequenceKind,
        sequence_id: str,
        ref: ContactRef,
        *,
        source: str = "api",
        data: dict[str, Any] | None = None,
        anchor: datetime | None = None,
    ) -> dict[str, Any]:
        """Enroll one contact and schedule its first step.

        Raises :class:`NotFound` (sequence or contact), :class:`Unprocessable` (sequence not
        enrollable, or contact ineligible: ``details.reason``), :class:`Conflict` (``already_enrolled``).
        An ineligible contact's skip is recorded in the audit log.
        """
        now = self.clock.now()
        try:
            with self.db.transaction() as tx:
                sequence = self._enrollable(tx, caller, kind, sequence_id)
                contact = self._resolve(tx, caller, ref)
                reason = ineligibility(contact)
                if reason is None:
                    if tx.enrollments.find_live_enrollment(sequence_id, contact["id"]) is not None:
                        raise _already_enrolled(contact["id"])
                    return self.enroll_in_tx(tx, caller, sequence, contact, source, data, now, anchor=anchor)
        except IntegrityError as error:
            # Lost a race with a concurrent enrollment of the same contact (unique live index).
            raise _already_enrolled(None) from error
        with self.db.transaction() as tx:
            self._record_skip(tx, caller, sequence, contact["id"], "ineligible", reason, source, now)
        raise Unprocessable(
            "The contact is not eligible for outreach.", code="ineligible", details={"reason": reason}
        )

    def enroll_in_tx(
        self,
        tx: Tx,
        caller: Caller,
        sequence: dict[str, Any],
        contact: dict[str, Any],
        source: str,
        data: dict[str, Any] | None,
        now: datetime,
        *,
        anchor: datetime | None = None,
    ) -> dict[str, Any]:
        """Insert the enrollment and its first task(s) inside ``tx``; the caller checked eligibility."""
        steps = tx.sequences.list_steps([sequence["id"]])
        enrollment = self._new_enrollment(caller, sequence, contact, source, data, now, anchor)
        tasks = self.scheduler.plan(sequence["kind"], steps, enrollment, now)
        _mirror_first(enrollment, tasks)
        if not tasks:  # nothing to send: done at once rather than active forever
            enrollment.update(status=EnrollmentStatus.COMPLETED.value, completed_at=now)
        tx.enrollments.insert_enrollments([enrollment])
        tx.enrollments.insert_tasks(tasks)
        record(tx, caller, tag_for(caller, "enrollment", "created"), "enrollment", enrollment["id"],
               _audit_data(sequence, contact["id"], source), now)  # fmt: skip
        return enrollment

    def enroll_bulk(
        self,
        caller: Caller,
        kind: SequenceKind,
        sequence_id: str,
        *,
        customer_ids: list[str],
        emails: list[str],
        source: str = "api_bulk",
    ) -> BulkResult:
        """Enroll up to 1000 contacts by id and/or email, in a bounded number of queries.

        Per-contact problems (unknown, already enrolled, ineligible, repeated) are skipped with a
        code and reason, never errors. Raises :class:`BadRequest` for more than 1000 contacts.
        """
        if not customer_ids and not emails:
            raise MissingField(
                "Give customer_ids and/or emails.", details={"fields": ["customer_ids", "emails"]}
            )
        if len(customer_ids) + len(emails) > MAX_BULK:
            raise BadRequest(
                f"At most {MAX_BULK} contacts per call (got {len(customer_ids) + len(emails)}).",
                code="too_many_contacts",
                details={"limit": MAX_BULK},
            )
        for attempt in range(3):
            try:
                return self._enroll_bulk_once(caller, kind, sequence_id, customer_ids, emails, source)
            except IntegrityError:
                # A concurrent enrollment took one of these contacts; re-read and try again.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _enroll_bulk_once(self, caller, kind, sequence_id, customer_ids, emails, source) -> BulkResult:
        now = self.clock.now()
        result = BulkResult()
        with self.db.transaction() as tx:
            sequence = self._enrollable(tx, caller, kind, sequence_id)
            by_id = tx.contacts.eligibility_by_ids(caller.org_id, list(dict.fromkeys(customer_ids)))
            by_email = tx.contacts.eligibility_by_emails(
                caller.org_id, list(dict.fromkeys(e.strip().lower() for e in emails))
            )
            requested = [("customerId", cid, by_id.get(cid)) for cid in customer_ids]
            requested += [("email", email, by_email.get(email.strip().lower())) for email in emails]
            resolved_ids = list({c["id"] for _, _, c in requested if c is not None})
            live = tx.enrollments.live_contact_ids(sequence_id, resolved_ids)
            steps = tx.sequences.list_steps([sequence_id])

            seen: set[str] = set()
            new_enrollments, new_tasks, audit_entries = [], [], []
            for key, given, contact in requested:
                entry: dict[str, Any] = {key: given}
                if contact is not None and key == "email":
                    entry = {"customerId": contact["id"], "email": given}
                skip = None
                if contact is None:
                    what = "email" if key == "email" else "id"
                    skip = ("customer_not_found", f"No contact found with this {what}")
                elif contact["id"] in seen:
                    skip = ("duplicate", "This contact appears more than once in the request")
                elif contact["id"] in live:
                    skip = ("already_enrolled", "Contact is already enrolled in this sequence")
                elif reason := ineligibility(contact):
                    skip = ("ineligible", reason)
                if skip:
                    result.skipped += 1
                    result.results.append({**entry, "status": "skipped", "code": skip[0], "reason": skip[1]})
                    audit_entries.append(self._skip_entry(caller, sequence, contact["id"] if contact else given,
                                                          skip[0], skip[1], source))  # fmt: skip
                    continue
                seen.add(contact["id"])
                enrollment = self._new_enrollment(caller, sequence, contact, source, None, now, None)
                tasks = self.scheduler.plan(sequence["kind"], steps, enrollment, now)
                _mirror_first(enrollment, tasks)
                new_enrollments.append(enrollment)
                new_tasks.extend(tasks)
                result.enrolled += 1
                result.results.append({**entry, "status": "enrolled", "enrollmentId": enrollment["id"]})
                audit_entries.append((tag_for(caller, "enrollment", "created"), "enrollment", enrollment["id"],
                                      _audit_data(sequence, contact["id"], source)))  # fmt: skip
            tx.enrollments.insert_enrollments(new_enrollments)
            tx.enrollments.insert_tasks(new_tasks)
            record_many(tx, caller, audit_entries, now)
        return result

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
            return self._load(tx, caller, sequence_id, enrollment_id)

    # Changing ---------------------------------------------------------------------------

    def set_status(
        self, caller: Caller, kind: SequenceKind, sequence_id: str, enrollment_id: str, status: str
    ) -> dict[str, Any]:
        """Pause (keeping the remaining delay) or resume (``next_send_at = now + remaining``).

        Setting the status it already has changes nothing. Raises :class:`Conflict` for an
        enrollment that has ended.
        """
        now = self.clock.now()
        with self.db.transaction() as tx:
            self.sequences.load(tx, caller, kind, sequence_id)
            enrollment = self._load(tx, caller, sequence_id, enrollment_id)
            if enrollment["status"] == status:
                return enrollment
            if enrollment["status"] not in ("active", "paused"):
                raise Conflict(
                    f"The enrollment has ended ({enrollment['status']}); it cannot be {status}.",
                    code="enrollment_ended",
                    details={"status": enrollment["status"]},
                )
            if status == "paused":
                self._pause(tx, enrollment, now)
                action = "paused"
            else:
                self._resume(tx, enrollment, now)
                action = "resumed"
            record(tx, caller, tag_for(caller, "enrollment", action), "enrollment", enrollment_id,
                   {"sequence_id": sequence_id, "contact_id": enrollment["contact_id"]}, now)  # fmt: skip
            return self._load(tx, caller, sequence_id, enrollment_id)

    def exit(
        self, caller: Caller, kind: SequenceKind, sequence_id: str, enrollment_id: str, reason: str = "manual"
    ) -> dict[str, Any]:
        """Exit a live enrollment with ``reason`` and cancel whatever is pending. An enrollment that
        has already ended is returned as it is (DELETE is idempotent)."""
        now = self.clock.now()
        with self.db.transaction() as tx:
            self.sequences.load(tx, caller, kind, sequence_id)
            enrollment = self._load(tx, caller, sequence_id, enrollment_id)
            if enrollment["status"] not in ("active", "paused"):
                return enrollment
            self.end_in_tx(tx, caller, enrollment, "exited", reason, now)
            return self._load(tx, caller, sequence_id, enrollment_id)

    def unenroll_contact(
        self, caller: Caller, kind: SequenceKind, sequence_id: str, ref: ContactRef, *, status: str = "completed",
        reason: str = "unenrolled",
    ) -> dict[str, Any]:  # fmt: skip
        """End the contact's live enrollment in this sequence (the bot dialect marks it completed).

        Raises :class:`NotFound` ``not_found`` for an unknown sequence and ``not_enrolled`` when the
        contact has no live enrollment (including an unknown contact).
        """
        now = self.clock.now()
        with self.db.transaction() as tx:
            self.sequences.load(tx, caller, kind, sequence_id)
            try:
                contact = self._resolve(tx, caller, ref)
            except NotFound:
                contact = None
            enrollment = tx.enrollments.find_live_enrollment(sequence_id, contact["id"]) if contact else None
            if enrollment is None:
                raise NotFound("The contact is not actively enrolled in this sequence.", code="not_enrolled")
            self.end_in_tx(tx, caller, enrollment, status, reason, now)
            return self._load(tx, caller, sequence_id, enrollment["id"])

    def end_in_tx(
        self, tx: Tx, caller: Caller, enrollment: dict[str, Any], status: str, reason: str, now: datetime
    ) -> None:
        """Finish a live enrollment as ``exited`` or ``completed`` and cancel its pending tasks."""
        values: dict[str, Any] = {
            "status": status,
            "exit_reason": reason,
            "next_send_at": None,
            "current_step_id": None,
            "paused_at": None,
            "updated_at": now,
        }
        values["exited_at" if status == "exited" else "completed_at"] = now
        tx.enrollments.update_enrollment(enrollment["id"], values)
        cancelled = tx.enrollments.cancel_open_tasks(enrollment["id"], now, f"enrollment {status}: {reason}")
        record(tx, caller, tag_for(caller, "enrollment", status), "enrollment", enrollment["id"],
               {"sequence_id": enrollment["sequence_id"], "contact_id": enrollment["contact_id"],
                "reason": reason, "tasks_cancelled": cancelled}, now)  # fmt: skip

    # Auto-enrollment (listeners on the contact service) ----------------------------------

    def on_contact_created(self, tx: Tx, caller: Caller, contact: dict[str, Any]) -> None:
        """Enroll a new contact into every active ``contact_created`` sequence."""
        sequences = tx.sequences.find_triggered_sequences(
            caller.org_id, SequenceKind.SEQUENCE, "contact_created"
        )
        self._auto_enroll(tx, caller, contact["id"], sequences, "auto:contact_created")

    def on_tags_added(self, tx: Tx, caller: Caller, contact: dict[str, Any], tags: list[str]) -> None:
        """Enroll a contact into every active ``tag_added`` sequence whose trigger tag was just added."""
        sequences = [
            s
            for s in tx.sequences.find_triggered_sequences(caller.org_id, SequenceKind.SEQUENCE, "tag_added")
            if (s["trigger_config"] or {}).get("tag") in tags
        ]
        self._auto_enroll(tx, caller, contact["id"], sequences, "auto:tag_added")

    def _auto_enroll(
        self, tx: Tx, caller: Caller, contact_id: str, sequences: list[dict], source: str
    ) -> None:
        if not sequences:
            return
        now = self.clock.now()
        contact = tx.contacts.get_contact(caller.org_id, contact_id)
        for sequence in sequences:
            reason = ineligibility(contact)
            if reason is not None:
                self._record_skip(tx, caller, sequence, contact_id, "ineligible", reason, source, now)
            elif tx.enrollments.find_live_enrollment(sequence["id"], contact_id) is not None:
                self._record_skip(tx, caller, sequence, contact_id, "already_enrolled",
                                  "Contact is already enrolled in this sequence", source, now)  # fmt: skip
            else:
                self.enroll_in_tx(tx, caller, sequence, contact, source, None, now)

    # Helpers ----------------------------------------------------------------------------

    def _enrollable(self, tx: Tx, caller: Caller, kind: SequenceKind, sequence_id: str) -> dict[str, Any]:
        """The sequence, if it accepts enrollments: active, or paused (held until resumed).

        Draft and archived sequences answer 422 ``sequence_not_active``.
        """
        sequence = self.sequences.load(tx, caller, kind, sequence_id)
        if sequence["status"] not in _ENROLLABLE:
            raise Unprocessable(
                f"The sequence is {sequence['status']}; only active or paused sequences accept enrollments.",
                code="sequence_not_active",
                details={"reason": f"sequence_status:{sequence['status']}"},
            )
        if tx.sequences.count_steps(sequence_id) == 0:
            raise Unprocessable(
                "The sequence has no steps; add one before enrolling.",
                code="sequence_has_no_steps",
                details={"reason": "sequence_steps:none"},
            )
        return sequence

    @staticmethod
    def _resolve(tx: Tx, caller: Caller, ref: ContactRef) -> dict[str, Any]:
        if ref.kind == "email":
            contact = tx.contacts.find_contact_by_email(caller.org_id, ref.value.lower())
        else:
            contact = tx.contacts.get_contact(caller.org_id, ref.value)
        if contact is None:
            raise NotFound(f"No contact with {'email' if ref.kind == 'email' else 'id'} {ref.value}.")
        return contact

    @staticmethod
    def _load(tx: Tx, caller: Caller, sequence_id: str, enrollment_id: str) -> dict[str, Any]:
        enrollment = tx.enrollments.get_enrollment(caller.org_id, enrollment_id, sequence_id)
        if enrollment is None:
            raise NotFound(f"No enrollment with id {enrollment_id} in this sequence.")
        return enrollment

    @staticmethod
    def _new_enrollment(caller, sequence, contact, source, data, now, anchor) -> dict[str, Any]:
        return {
            "id": new_id(),
            "org_id": caller.org_id,
            "sequence_id": sequence["id"],
            "contact_id": contact["id"],
            "status": EnrollmentStatus.ACTIVE.value,
            "enrollment_source": source,
            "enrollment_data": data or _NO_DATA,
            "enrolled_at": now,
            "enrollment_time": anchor or now,
            "current_step_id": None,
            "next_send_at": None,
            "paused_at": None,
            "completed_at": None,
            "exited_at": None,
            "exit_reason": None,
            "last_error": None,
            "company_id": contact.get("company_id"),
            "deal_id": None,
            "updated_at": now,
        }

    def _pause(self, tx: Tx, enrollment: dict[str, Any], now: datetime) -> None:
        for task in tx.enrollments.open_tasks(enrollment["id"]):
            if task["status"] != "pending":
                continue
            remaining = max(0, math.ceil((task["scheduled_for"] - now).total_seconds()))
            tx.enrollments.update_task(
                task["id"], {"status": "paused", "remaining_seconds": remaining, "scheduled_for": None,
                             "updated_at": now},
            )  # fmt: skip
        tx.enrollments.update_enrollment(
            enrollment["id"], {"status": "paused", "paused_at": now, "next_send_at": None, "updated_at": now}
        )

    def _resume(self, tx: Tx, enrollment: dict[str, Any], now: datetime) -> None:
        for task in tx.enrollments.open_tasks(enrollment["id"]):
            if task["status"] != "paused":
                continue
            tx.enrollments.update_task(
                task["id"],
                {"status": "pending", "scheduled_for": now + timedelta(seconds=task["remaining_seconds"] or 0),
                 "remaining_seconds": None, "updated_at": now},
            )  # fmt: skip
        tx.enrollments.update_enrollment(
            enrollment["id"], {"status": "active", "paused_at": None, "updated_at": now}
        )
        self.scheduler.mirror(tx, enrollment["id"], now)

    def _skip_entry(self, caller, sequence, subject_id, code, reason, source):
        return (tag_for(caller, "enrollment", "skipped"), "contact", subject_id,
                {"sequence_id": sequence["id"], "sequence_name": sequence["name"], "code": code, "reason": reason,
                 "source": source})  # fmt: skip

    def _record_skip(self, tx, caller, sequence, contact_id, code, reason, source, now) -> None:
        record_many(tx, caller, [self._skip_entry(caller, sequence, contact_id, code, reason, source)], now)


def _mirror_first(enrollment: dict[str, Any], tasks: list[dict[str, Any]]) -> None:
    if tasks:
        first = min(tasks, key=lambda t: t["scheduled_for"])
        enrollment["current_step_id"] = first["step_id"]
        enrollment["next_send_at"] = first["scheduled_for"]


def _already_enrolled(contact_id: str | None) -> Conflict:
    return Conflict(
        "The contact is already enrolled in this sequence.",
        code="already_enrolled",
        details={"contact_id": contact_id} if contact_id else {},
    )


def _audit_data(sequence: dict[str, Any], contact_id: str, source: str) -> dict[str, Any]:
    return {"sequence_id": sequence["id"], "sequence_name": sequence["name"], "contact_id": contact_id,
            "source": source}  # fmt: skip

"""Enrollment: one engine under all three API dialects and the webhook bridge.

Enroll one contact or many, pause, resume, exit, unenroll; the eligibility guardrails; and
auto-enrollment when contacts are created or tagged.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy.exc import IntegrityError

from seqbridge.audit import record, record_many, tag_for
from seqbridge.clock import Clock
from seqbridge.context import Caller
from seqbridge.errors import BadRequest, Conflict, MissingField, NotFound, Unprocessable
from seqbridge.services.common import CursorPage, OffsetPage, decode_cursor, encode_cursor, new_id
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
#: A filter bulk-enroll pass left alone this long starts over at the next call.
PASS_IDLE = timedelta(hours=24)


#: Fields each filter axis may use (the event-queue seed's "entity axis distinction").
CONTACT_FILTER_FIELDS = ("contact_type", "source", "email", "first_name", "last_name", "job_title", "city", "state",
                         "country")  # fmt: skip
CUSTOMER_FILTER_FIELDS = (
    "account_type",
    "industry",
    "is_customer",
    "is_supplier",
    "city",
    "state",
    "country",
)
_ELSEWHERE = {"opportunity_type": "opportunity_type lives on deals and is not filterable here; "
                                  "use automations with deal triggers instead"}  # fmt: skip


@dataclass(frozen=True)
class FilterProblem:
    """One field a filter cannot take: ``axis`` (contact_filter or customer_filter), ``field``,
    ``code`` (``wrong_filter_axis`` or ``invalid_filter``) and a message naming what to use."""

    axis: str
    field: str
    code: str
    message: str


def _filter_value_ok(value: Any) -> bool:
    scalar = (str, bool)
    return isinstance(value, scalar) or (
        isinstance(value, list) and all(isinstance(v, scalar) for v in value)
    )


def filter_problems(contact_filter: Any, customer_filter: Any) -> list[FilterProblem]:
    """Every field of the two filters that is on the wrong axis, unknown, or holds a value a filter
    cannot take (a string, a boolean or a list of them). The API and the mapping validator both
    use this check, and enrolling by filter runs it again on the computed filter."""
    problems = []
    for axis, given, allowed, other, other_fields in (
        ("contact_filter", contact_filter, CONTACT_FILTER_FIELDS, "customer_filter", CUSTOMER_FILTER_FIELDS),
        ("customer_filter", customer_filter, CUSTOMER_FILTER_FIELDS, "contact_filter", CONTACT_FILTER_FIELDS),
    ):
        if given is not None and not isinstance(given, dict):
            problems.append(FilterProblem(axis, "", "invalid_filter", f"{axis} must be an object of fields"))
            continue
        for name, value in (given or {}).items():
            if name in allowed:
                if not _filter_value_ok(value):
                    problems.append(
                        FilterProblem(
                            axis,
                            name,
                            "invalid_filter",
                            f"{name} must be a string, a boolean or a list of them",
                        )
                    )
                continue
            if name in _ELSEWHERE:
                message = _ELSEWHERE[name]
            elif name in other_fields:
                owner = "company/customer" if other == "customer_filter" else "contact"
                message = f"{name} is a {owner} field: filter on it with {other}, not {axis}"
            else:
                message = f"unknown field {name}; {axis} takes {', '.join(allowed)}"
            problems.append(FilterProblem(axis, str(name), "wrong_filter_axis", message))
    return problems


def check_filters(contact_filter: Any, customer_filter: Any) -> None:
    """Refuse a field used on the wrong axis (naming the filter to use), an unknown field, or a
    value a filter cannot take. Raises :class:`BadRequest` (``wrong_filter_axis`` or
    ``invalid_filter``) with every problem in ``details.errors``."""
    problems = filter_problems(contact_filter, customer_filter)
    if problems:
        errors = [
            {"path": f"$.{p.axis}" + (f".{p.field}" if p.field else ""), "in": "body", "message": p.message}
            for p in problems
        ]
        raise BadRequest(problems[0].message, code=problems[0].code, details={"errors": errors})


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
    #: One entry per contact asked for: by, input, contact_id, status (enrolled|skipped),
    #: enrollment_id, or code and reason.
    results: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class MatchResult(BulkResult):
    has_more: bool = False
    next_cursor: str | None = None
    #: Matching contacts with a live enrollment here, left out of the page (uncapped).
    already_enrolled: int = 0


@dataclass(frozen=True)
class _Options:
    source: str
    skip_live: bool
    anchor: datetime | None
    deal_id: str | None


class _Batch:
    """Collects the enrollments, tasks and audit events of one bulk call, then writes each kind
    with a single insert."""

    def __init__(self, service, tx, caller, sequence, options: _Options, now, *, audit_skips: bool = True):
        self.service, self.tx, self.caller, self.sequence = service, tx, caller, sequence
        self.options, self.now, self.audit_skips = options, now, audit_skips
        self.steps = tx.sequences.list_steps([sequence["id"]])
        self.enrollments: list[dict[str, Any]] = []
        self.tasks: list[dict[str, Any]] = []
        self.audit: list[tuple] = []
        self.result = BulkResult()

    def enroll(
        self, entry: dict[str, Any], contact: dict[str, Any], data: dict[str, Any] | None = None
    ) -> dict:
        """Add one enrollment with its planned tasks; return it."""
        service, options = self.service, self.options
        enrollment = service._new_enrollment(self.caller, self.sequence, contact, options.source, data, self.now,
                                             options.anchor, keyed=options.skip_live)  # fmt: skip
        enrollment["deal_id"] = options.deal_id
        tasks = service.scheduler.plan(self.sequence["kind"], self.steps, enrollment, self.now)
        _mirror_first(enrollment, tasks)
        if not tasks:  # nothing to send: done at once rather than active forever
            enrollment.update(status=EnrollmentStatus.COMPLETED.value, completed_at=self.now)
        self.enrollments.append(enrollment)
        self.tasks.extend(tasks)
        self.result.enrolled += 1
        self.result.results.append({**entry, "status": "enrolled", "enrollment_id": enrollment["id"]})
        self.audit.append((tag_for(self.caller, "enrollment", "created"), "enrollment", enrollment["id"],
                           _audit_data(self.sequence, contact["id"], options.source)))  # fmt: skip
        return enrollment

    def skip(self, entry: dict[str, Any], subject: str, code: str, reason: str) -> None:
        self.result.skipped += 1
        self.result.results.append({**entry, "status": "skipped", "code": code, "reason": reason})
        if self.audit_skips:
            self.audit.append(self.service._skip_entry(self.caller, self.sequence, subject, code, reason,
                                                       self.options.source))  # fmt: skip

    def flush(self) -> BulkResult:
        self.tx.enrollments.insert_enrollments(self.enrollments)
        self.tx.enrollments.insert_tasks(self.tasks)
        record_many(self.tx, self.caller, self.audit, self.now)
        return self.result


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
                    live = tx.enrollments.find_live_enrollment(sequence_id, contact["id"])
                    if live is not None:
                        raise _already_enrolled(contact["id"], live["id"])
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
        batch = _Batch(self, tx, caller, sequence, _Options(source, True, anchor, None), now)
        enrollment = batch.enroll(
            {"by": "id", "input": contact["id"], "contact_id": contact["id"]}, contact, data
        )
        batch.flush()
        return enrollment

    def enroll_bulk(
        self,
        caller: Caller,
        kind: SequenceKind,
        sequence_id: str,
        *,
        customer_ids: list[str],
        emails: list[str] | None = None,
        source: str = "api_bulk",
        skip_if_already_enrolled: bool = True,
        anchor: datetime | None = None,
        deal_id: str | None = None,
        max_contacts: int = MAX_BULK,
    ) -> BulkResult:
        """Enroll contacts named by id and/or email, in a bounded number of queries.

        Per-contact problems are skipped with a code and reason, never errors: ``customer_not_found``,
        ``duplicate``, ``already_enrolled`` (unless ``skip_if_already_enrolled`` is false) and
        ``ineligible``. Each result names the input (``by``: ``id`` or ``email``) and the
        contact. Raises :class:`MissingField` for none and :class:`BadRequest` for more than
        ``max_contacts``.
        """
        emails = emails or []
        if not customer_ids and not emails:
            raise MissingField("Give the contacts to enroll.", details={"fields": ["customer_ids", "emails"]})
        if len(customer_ids) + len(emails) > max_contacts:
            raise BadRequest(
                f"At most {max_contacts} contacts per call (got {len(customer_ids) + len(emails)}).",
                code="too_many_contacts",
                details={"limit": max_contacts},
            )
        options = _Options(source, skip_if_already_enrolled, anchor, deal_id)
        for attempt in range(3):
            try:
                return self._enroll_listed(caller, kind, sequence_id, customer_ids, emails, options)
            except IntegrityError:
                # A concurrent enrollment took one of these contacts; re-read and try again.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _enroll_listed(
        self, caller, kind, sequence_id, customer_ids, emails, options: _Options
    ) -> BulkResult:
        now = self.clock.now()
        with self.db.transaction() as tx:
            sequence = self._enrollable(tx, caller, kind, sequence_id)
            by_id = tx.contacts.eligibility_by_ids(caller.org_id, list(dict.fromkeys(customer_ids)))
            by_email = tx.contacts.eligibility_by_emails(
                caller.org_id, list(dict.fromkeys(e.strip().lower() for e in emails))
            )
            requested = [("id", cid, by_id.get(cid)) for cid in customer_ids]
            requested += [("email", email, by_email.get(email.strip().lower())) for email in emails]
            resolved = list({c["id"] for _, _, c in requested if c is not None})
            live = tx.enrollments.live_contact_ids(sequence_id, resolved) if options.skip_live else set()
            batch = _Batch(self, tx, caller, sequence, options, now)
            seen: set[str] = set()
            for by, given, contact in requested:
                entry = {"by": by, "input": given, "contact_id": contact["id"] if contact else None}
                if contact is None:
                    batch.skip(entry, given, "customer_not_found",
                               f"No contact found with this {'email' if by == 'email' else 'id'}")  # fmt: skip
                elif contact["id"] in seen:
                    batch.skip(
                        entry,
                        contact["id"],
                        "duplicate",
                        "This contact appears more than once in the request",
                    )
                elif contact["id"] in live:
                    batch.skip(
                        entry,
                        contact["id"],
                        "already_enrolled",
                        "Contact is already enrolled in this sequence",
                    )
                elif reason := ineligibility(contact):
                    batch.skip(entry, contact["id"], "ineligible", reason)
                else:
                    seen.add(contact["id"])
                    batch.enroll(entry, contact)
            return batch.flush()

    def enroll_matching(
        self,
        caller: Caller,
        kind: SequenceKind,
        sequence_id: str,
        *,
        contact_filter: dict[str, Any] | None = None,
        customer_filter: dict[str, Any] | None = None,
        skip_if_already_enrolled: bool = True,
        cursor: str | None = None,
        resume: bool = False,
        limit: int = 500,
        source: str = "api_bulk",
        anchor: datetime | None = None,
        deal_id: str | None = None,
    ) -> MatchResult:
        """Take the next page of contacts matching a filter, in id order: at most ``limit`` of
        them in all, each enrolled or skipped (``ineligible``). With ``skip_if_already_enrolled``
        (the default) contacts with a live enrollment here are not in the page: they are counted,
        uncapped, in ``already_enrolled``.

        The page starts after ``cursor`` (a ``next_cursor``) when given. Otherwise, with
        ``resume``, it starts where the last call with the same arguments stopped: those calls are
        one *pass*, which ends at the call that answers ``has_more: false`` (or after a day left
        alone), so the same body again takes the next page, whatever happened to the earlier
        pages' enrollments since. Without either it starts at the beginning.

        Raises :class:`BadRequest` (``wrong_filter_axis``, ``invalid_filter``) for a filter field
        on the wrong axis, unknown, or with a value a filter cannot take.
        """
        check_filters(contact_filter, customer_filter)
        now = self.clock.now()
        after = decode_cursor(cursor, {"after": str})["after"] if cursor else None
        options = _Options(source, skip_if_already_enrolled, anchor, deal_id)
        match = {"contact_filter": contact_filter, "customer_filter": customer_filter}
        pass_key = _pass_key(match, options) if resume and cursor is None else None
        with self.db.transaction() as tx:
            sequence = self._enrollable(tx, caller, kind, sequence_id)
            if pass_key:
                current = tx.enrollments.lock_pass(caller.org_id, sequence_id, pass_key, now)
                fresh = current["updated_at"] < now - PASS_IDLE
                after = None if fresh else current["after_contact_id"]
            live_filter = (sequence_id, False) if skip_if_already_enrolled else None
            already = (
                tx.contacts.count_matching(caller.org_id, **match, live_in_sequence=(sequence_id, True))
                if skip_if_already_enrolled
                else 0
            )
            window = tx.contacts.match_contacts(
                caller.org_id,
                **match,
                after_id=after,
                eligible=None,
                live_in_sequence=live_filter,
                limit=limit + 1,
            )
            has_more = len(window) > limit
            window = window[:limit]
            batch = _Batch(self, tx, caller, sequence, options, now, audit_skips=False)
            for contact in window:
                entry = {"by": "filter", "input": contact["id"], "contact_id": contact["id"]}
                if reason := ineligibility(contact):
                    batch.skip(entry, contact["id"], "ineligible", reason)
                else:
                    batch.enroll(entry, contact)
            result = batch.flush()
            if pass_key and has_more:
                tx.enrollments.move_pass(sequence_id, pass_key, window[-1]["id"], now)
            elif pass_key:
                tx.enrollments.end_pass(sequence_id, pass_key)
            if result.skipped:
                reasons: dict[str, int] = {}
                for item in result.results:
                    if item["status"] == "skipped":
                        reasons[item["reason"]] = reasons.get(item["reason"], 0) + 1
                record(
                    tx,
                    caller,
                    tag_for(caller, "enrollment", "skipped"),
                    kind.value,
                    sequence_id,
                    {"filter": match, "skipped": result.skipped, "reasons": reasons, "source": source},
                    now,
                )
        next_cursor = encode_cursor({"after": window[-1]["id"]}) if has_more else None
        return MatchResult(result.enrolled, result.skipped, result.results, has_more, next_cursor, already)

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

    def unenroll(
        self,
        caller: Caller,
        kind: SequenceKind,
        sequence_id: str,
        ref: ContactRef,
        *,
        status: str = "exited",
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
                contact = self._resolve(tx, caller, ref)
            except NotFound:
                contact = None
            live = [e for e in tx.enrollments.live_enrollments_for_contact(caller.org_id, contact["id"])
                    if e["sequence_id"] == sequence_id] if contact else []  # fmt: skip
            if not live:
                raise NotFound("The contact is not actively enrolled here.", code="not_enrolled")
            for enrollment in live:
                self.end_in_tx(tx, caller, enrollment, status, reason, now)
            return [self._load(tx, caller, sequence_id, e["id"]) for e in live]

    def unenroll_everywhere(self, caller: Caller, ref: ContactRef, *, reason: str) -> list[dict[str, Any]]:
        """Exit every live enrollment the contact has, in sequences and queues alike, with
        ``reason``; return them (none for an unknown contact, as :meth:`unenroll` treats one)."""
        now = self.clock.now()
        with self.db.transaction() as tx:
            try:
                contact = self._resolve(tx, caller, ref)
            except NotFound:
                return []
            live = tx.enrollments.live_enrollments_for_contact(caller.org_id, contact["id"])
            for enrollment in live:
                self.end_in_tx(tx, caller, enrollment, "exited", reason, now)
            return live

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
            contact = self._resolve(tx, caller, ContactRef("id", contact_id))
            live = tx.enrollments.live_enrollments_for_contact(caller.org_id, contact["id"])
            if sequence_id is not None:
                live = [e for e in live if e["sequence_id"] == sequence_id]
            for enrollment in live:
                self.end_in_tx(tx, caller, enrollment, "exited", reason, now)
            return [tx.enrollments.get_enrollment(caller.org_id, e["id"]) for e in live]

    def list_tasks(
        self, caller: Caller, kind: SequenceKind, sequence_id: str, statuses: tuple[str, ...] | None,
        cursor: str | None, limit: int,
    ) -> CursorPage:  # fmt: skip
        """The scheduled step executions of a sequence or queue, cursor-paginated in creation order."""
        after = decode_cursor(cursor, {"after": int})["after"] if cursor else None
        with self.db.transaction(write=False) as tx:
            self.sequences.load(tx, caller, kind, sequence_id)
            rows = tx.enrollments.list_tasks(caller.org_id, sequence_id, statuses, after, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return CursorPage(rows, limit, encode_cursor({"after": rows[-1]["id"]}) if more else None)

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
        elif ref.kind == "phone":  # already E.164; the oldest contact with the number
            contact = next(iter(tx.contacts.find_contacts_by_phone(caller.org_id, ref.value)), None)
        elif ref.kind.startswith("attribute:"):  # a custom attribute, e.g. a CRM's id for the contact
            matches = tx.contacts.find_contacts_by_attribute(
                caller.org_id, ref.kind.partition(":")[2], ref.value
            )
            contact = next(iter(matches), None)
        else:
            contact = tx.contacts.get_contact(caller.org_id, ref.value)
        if contact is None:
            raise NotFound(f"No contact with {ref.kind} {ref.value}.")
        return contact

    @staticmethod
    def _load(tx: Tx, caller: Caller, sequence_id: str, enrollment_id: str) -> dict[str, Any]:
        enrollment = tx.enrollments.get_enrollment(caller.org_id, enrollment_id, sequence_id)
        if enrollment is None:
            raise NotFound(f"No enrollment with id {enrollment_id} in this sequence.")
        return enrollment

    @staticmethod
    def _new_enrollment(
        caller, sequence, contact, source, data, now, anchor, *, keyed=True
    ) -> dict[str, Any]:
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
            "live_key": contact["id"] if keyed else None,
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


def _already_enrolled(contact_id: str | None, enrollment_id: str | None = None) -> Conflict:
    # The live enrollment's id lets a retried enroll (Zapier, n8n) answer it instead of failing.
    details = {"contact_id": contact_id, "enrollment_id": enrollment_id} if contact_id else {}
    return Conflict(
        "The contact is already enrolled in this sequence.",
        code="already_enrolled",
        details={k: v for k, v in details.items() if v},
    )


def _audit_data(sequence: dict[str, Any], contact_id: str, source: str) -> dict[str, Any]:
    return {"sequence_id": sequence["id"], "sequence_name": sequence["name"], "contact_id": contact_id,
            "source": source}  # fmt: skip


def _pass_key(match: dict[str, Any], options: _Options) -> str:
    """What makes two filter bulk-enroll calls the same pass: every argument but the cursor."""
    anchor = options.anchor.isoformat() if options.anchor else None
    text = json.dumps(
        {
            **match,
            "skip": options.skip_live,
            "anchor": anchor,
            "deal_id": options.deal_id,
            "source": options.source,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(text.encode()).hexdigest()

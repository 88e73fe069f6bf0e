"""Enrolling: one contact, a list of them, or those a filter matches, into a sequence or an event
queue; the eligibility guardrails; and auto-enrollment when contacts are created or tagged. What
happens to an enrollment afterwards is :mod:`seqbridge.services.lifecycle`.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError

from seqbridge.audit import record, record_many, tag_for
from seqbridge.context import Caller
from seqbridge.errors import BadRequest, Conflict, MissingField, Unprocessable
from seqbridge.services.common import decode_cursor, encode_cursor
from seqbridge.services.contacts import ContactRef, resolve_contact
from seqbridge.services.enrollment_batch import (
    BulkResult,
    EnrollmentBatch,
    EnrollOptions,
    MatchResult,
    skip_entry,
)
from seqbridge.services.filters import check_filters
from seqbridge.services.sequences import SequenceKind, SequenceStatus
from seqbridge.storage.tx import Tx

MAX_BULK = 1000
_ENROLLABLE = (SequenceStatus.ACTIVE.value, SequenceStatus.PAUSED.value)
#: A filter bulk-enroll pass left alone this long starts over at the next call.
PASS_IDLE = timedelta(hours=24)


def ineligibility(contact: dict[str, Any]) -> str | None:
    """Why a contact may not be enrolled (``contact_status:unsubscribed``, ...), or None."""
    if contact["status"] != "active":
        return f"contact_status:{contact['status']}"
    if contact["converted"]:
        return "converted_customer"
    if contact.get("has_open_ticket"):
        return "active_ticket:open"
    return None


class Enrolling:
    """The enrolling use cases. Mixed into :class:`seqbridge.services.enrollment.EnrollmentService`
    (``db``, ``clock``, ``sequences``, ``scheduler``)."""

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
                contact = resolve_contact(tx, caller, ref)
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
        batch = EnrollmentBatch(
            self.scheduler, tx, caller, sequence, EnrollOptions(source, True, anchor, None), now
        )
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
        options = EnrollOptions(source, skip_if_already_enrolled, anchor, deal_id)
        for attempt in range(3):
            try:
                return self._enroll_listed(caller, kind, sequence_id, customer_ids, emails, options)
            except IntegrityError:
                # A concurrent enrollment took one of these contacts; re-read and try again.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _enroll_listed(
        self, caller, kind, sequence_id, customer_ids, emails, options: EnrollOptions
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
            batch = EnrollmentBatch(self.scheduler, tx, caller, sequence, options, now)
            seen: set[str] = set()
            for by, given, contact in requested:
                entry = {"by": by, "input": given, "contact_id": contact["id"] if contact else None}
                if contact is None:
                    batch.skip(
                        entry,
                        given,
                        "customer_not_found",
                        f"No contact found with this {'email' if by == 'email' else 'id'}",
                    )
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
        options = EnrollOptions(source, skip_if_already_enrolled, anchor, deal_id)
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
            batch = EnrollmentBatch(self.scheduler, tx, caller, sequence, options, now, audit_skips=False)
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
                self._record_skip(
                    tx,
                    caller,
                    sequence,
                    contact_id,
                    "already_enrolled",
                    "Contact is already enrolled in this sequence",
                    source,
                    now,
                )
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

    def _record_skip(self, tx, caller, sequence, contact_id, code, reason, source, now) -> None:
        record_many(tx, caller, [skip_entry(caller, sequence, contact_id, code, reason, source)], now)


def _already_enrolled(contact_id: str | None, enrollment_id: str | None = None) -> Conflict:
    # The live enrollment's id lets a retried enroll (Zapier, n8n) answer it instead of failing.
    details = {"contact_id": contact_id, "enrollment_id": enrollment_id} if contact_id else {}
    return Conflict(
        "The contact is already enrolled in this sequence.",
        code="already_enrolled",
        details={k: v for k, v in details.items() if v},
    )


def _pass_key(match: dict[str, Any], options: EnrollOptions) -> str:
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

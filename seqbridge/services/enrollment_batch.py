"""One enrolling call's writes, made in memory and then written with one insert per kind: the
enrollments (each with its first tasks planned), the tasks, and the audit events of the
enrollments made and the contacts skipped. :mod:`seqbridge.services.enrolling` builds one per
call, for one contact or a thousand."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from seqbridge.audit import record_many, tag_for
from seqbridge.context import Caller
from seqbridge.services.common import new_id
from seqbridge.services.lifecycle import EnrollmentStatus
from seqbridge.storage.tx import Tx

if TYPE_CHECKING:
    from seqbridge.services.scheduling import Scheduler

_NO_DATA: dict[str, Any] = {}  # shared, never mutated: bulk inserts convert it once


@dataclass
class BulkResult:
    """What a bulk enrollment did: how many enrolled and skipped, and each contact's entry."""

    enrolled: int = 0
    skipped: int = 0
    #: One entry per contact asked for: by, input, contact_id, status (enrolled|skipped),
    #: enrollment_id, or code and reason.
    results: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class MatchResult(BulkResult):
    """A page of enrolling by filter: the bulk result, and where the next page starts."""

    has_more: bool = False
    next_cursor: str | None = None
    #: Matching contacts with a live enrollment here, left out of the page (uncapped).
    already_enrolled: int = 0


@dataclass(frozen=True)
class EnrollOptions:
    """How a call enrolls: its ``source`` (audit and enrollment), whether contacts with a live
    enrollment are skipped, the anchor time of the steps' delays, and the deal enrolled for."""

    source: str
    skip_live: bool
    anchor: datetime | None
    deal_id: str | None


class EnrollmentBatch:
    """Collects the enrollments, tasks and audit events of one bulk call, then writes each kind
    with a single insert."""

    def __init__(
        self,
        scheduler: Scheduler,
        tx: Tx,
        caller: Caller,
        sequence: dict[str, Any],
        options: EnrollOptions,
        now: datetime,
        *,
        audit_skips: bool = True,
    ) -> None:
        self.scheduler, self.tx, self.caller, self.sequence = scheduler, tx, caller, sequence
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
        options = self.options
        enrollment = new_enrollment(
            self.caller,
            self.sequence,
            contact,
            options.source,
            data,
            self.now,
            options.anchor,
            keyed=options.skip_live,
        )
        enrollment["deal_id"] = options.deal_id
        tasks = self.scheduler.plan(self.sequence["kind"], self.steps, enrollment, self.now)
        _mirror_first(enrollment, tasks)
        if not tasks:  # nothing to send: done at once rather than active forever
            enrollment.update(status=EnrollmentStatus.COMPLETED.value, completed_at=self.now)
        self.enrollments.append(enrollment)
        self.tasks.extend(tasks)
        self.result.enrolled += 1
        self.result.results.append({**entry, "status": "enrolled", "enrollment_id": enrollment["id"]})
        self.audit.append(
            (
                tag_for(self.caller, "enrollment", "created"),
                "enrollment",
                enrollment["id"],
                _audit_data(self.sequence, contact["id"], options.source),
            )
        )
        return enrollment

    def skip(self, entry: dict[str, Any], subject: str, code: str, reason: str) -> None:
        self.result.skipped += 1
        self.result.results.append({**entry, "status": "skipped", "code": code, "reason": reason})
        if self.audit_skips:
            self.audit.append(
                skip_entry(self.caller, self.sequence, subject, code, reason, self.options.source)
            )

    def flush(self) -> BulkResult:
        self.tx.enrollments.insert_enrollments(self.enrollments)
        self.tx.enrollments.insert_tasks(self.tasks)
        record_many(self.tx, self.caller, self.audit, self.now)
        return self.result


def new_enrollment(
    caller: Caller,
    sequence: dict[str, Any],
    contact: dict[str, Any],
    source: str,
    data: dict[str, Any] | None,
    now: datetime,
    anchor: datetime | None,
    *,
    keyed: bool = True,
) -> dict[str, Any]:
    """A new active enrollment's row (``keyed``: it holds the contact's one live place in the
    sequence, so a second live enrollment there is refused by the unique index)."""
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


def skip_entry(
    caller: Caller, sequence: dict[str, Any], subject_id: str, code: str, reason: str, source: str
) -> tuple:
    """The audit entry of a contact not enrolled (``code`` and ``reason`` say why)."""
    data = {
        "sequence_id": sequence["id"],
        "sequence_name": sequence["name"],
        "code": code,
        "reason": reason,
        "source": source,
    }
    return (tag_for(caller, "enrollment", "skipped"), "contact", subject_id, data)


def _mirror_first(enrollment: dict[str, Any], tasks: list[dict[str, Any]]) -> None:
    if tasks:
        first = min(tasks, key=lambda t: t["scheduled_for"])
        enrollment["current_step_id"] = first["step_id"]
        enrollment["next_send_at"] = first["scheduled_for"]


def _audit_data(sequence: dict[str, Any], contact_id: str, source: str) -> dict[str, Any]:
    return {
        "sequence_id": sequence["id"],
        "sequence_name": sequence["name"],
        "contact_id": contact_id,
        "source": source,
    }

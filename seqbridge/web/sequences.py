"""The sequences dialect (seed 003) and the bot dialect (seed 004), on the same routes.

A thin adapter: parse, call the sequence and enrollment services with kind ``sequence``,
shape the answer. Where the two seeds differ, both request forms are accepted.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from seqbridge.services.common import format_time
from seqbridge.services.contacts import contact_ref
from seqbridge.services.lifecycle import EnrollmentStatus
from seqbridge.services.sequences import SEQUENCE_FIELDS, SequenceKind
from seqbridge.web.definitions import add_definition_routes
from seqbridge.web.envelope import body, caller, ok, query
from seqbridge.web.pipeline import services

bp = Blueprint("sequences", __name__, url_prefix="/api/v1/sequences")
KIND = SequenceKind.SEQUENCE


# Shapes ---------------------------------------------------------------------------------------


def sequence_to_api(row: dict[str, Any]) -> dict[str, Any]:
    data = {
        "id": row["id"],
        "organization_id": row["org_id"],
        **{name: row[name] for name in SEQUENCE_FIELDS},
        "total_enrolled": row["total_enrolled"],
        "total_completed": row["total_completed"],
        "total_unsubscribed": row["total_unsubscribed"],
        "created_at": format_time(row["created_at"]),
        "updated_at": format_time(row["updated_at"]),
    }
    if "steps" in row:
        data["steps"] = [step_to_api(s) for s in row["steps"]]
    return data


def step_to_api(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "sequence_id": row["sequence_id"],
        "position": row["position"],
        "delay_days": row["delay_days"],
        "delay_minutes": row["delay_minutes"],
        "channel": row["action"],
        "subject": row["subject"],
        "body": row["body"],
        "webhook_url": row["webhook_url"],
        "created_at": format_time(row["created_at"]),
        "updated_at": format_time(row["updated_at"]),
    }


def enrollment_to_api(row: dict[str, Any]) -> dict[str, Any]:
    data = {
        "id": row["id"],
        "organization_id": row["org_id"],
        "sequence_id": row["sequence_id"],
        "contact_id": row["contact_id"],
        "customer_id": row["contact_id"],
        "status": row["status"],
        "current_step_id": row["current_step_id"],
        "next_send_at": format_time(row["next_send_at"]),
        "enrollment_source": row["enrollment_source"],
        "enrollment_data": row["enrollment_data"] or {},
        "enrolled_at": format_time(row["enrolled_at"]),
        "paused_at": format_time(row["paused_at"]),
        "completed_at": format_time(row["completed_at"]),
        "exited_at": format_time(row["exited_at"]),
        "exit_reason": row["exit_reason"],
        "last_error": row["last_error"],
        "created_at": format_time(row["enrolled_at"]),
        "updated_at": format_time(row["updated_at"]),
    }
    if "contact_email" in row:
        data["customer"] = {
            "id": row["contact_id"],
            "email": row["contact_email"],
            "first_name": row["contact_first_name"],
            "last_name": row["contact_last_name"],
            "phone": row["contact_phone"],
            "status": row["contact_status"],
        }
    return data


def _step_fields(given: dict[str, Any]) -> dict[str, Any]:
    """The dialect's step body in our terms: ``channel`` is the action."""
    fields = dict(given)
    if "channel" in fields:
        fields["action"] = fields.pop("channel")
    return fields


# Sequences ------------------------------------------------------------------------------------


@bp.get("")
def list_sequences():
    q = query()
    result = services().sequences.list_sequences(caller(), KIND, q.get("status"), q["limit"], q["offset"])
    return ok([sequence_to_api(r) for r in result.items], meta=result.meta())


add_definition_routes(
    bp,
    kind=KIND,
    id_param="sequence_id",
    shape=sequence_to_api,
    shape_step=step_to_api,
    step_fields=_step_fields,
)


# Enrollment -----------------------------------------------------------------------------------


@bp.post("/<sequence_id>/enroll")
def enroll(sequence_id: str):
    given = body() or {}
    enrollment = services().enrollment.enroll(
        caller(),
        KIND,
        sequence_id,
        contact_ref(given),
        source=given.get("enrollment_source") or "api",
        data=given.get("enrollment_data"),
    )
    return ok(enrollment_to_api(enrollment), 201)


@bp.post("/<sequence_id>/enroll_bulk")
def enroll_bulk(sequence_id: str):
    given = body()
    result = services().enrollment.enroll_bulk(
        caller(),
        KIND,
        sequence_id,
        customer_ids=given.get("customer_ids") or [],
        emails=given.get("emails") or [],
        source=given.get("enrollment_source") or "api_bulk",
    )
    return ok(
        {
            "enrolled": result.enrolled,
            "skipped": result.skipped,
            "results": [_bulk_item(r) for r in result.results],
        }
    )


def _bulk_item(item: dict[str, Any]) -> dict[str, Any]:
    """The seed's per-contact shape: customerId (and email when asked by email), status, code, reason."""
    shaped: dict[str, Any] = {}
    if item["contact_id"] is not None:
        shaped["customerId"] = item["contact_id"]
    elif item["by"] == "id":
        shaped["customerId"] = item["input"]
    if item["by"] == "email":
        shaped["email"] = item["input"]
    shaped["status"] = item["status"]
    if item["status"] == "enrolled":
        shaped["enrollmentId"] = item["enrollment_id"]
    else:
        shaped["code"], shaped["reason"] = item["code"], item["reason"]
    return shaped


@bp.get("/<sequence_id>/enrollments")
def list_enrollments(sequence_id: str):
    q = query()
    result = services().enrollment.list_enrollments(
        caller(), KIND, sequence_id, q.get("status"), q["limit"], q["offset"]
    )
    return ok([enrollment_to_api(r) for r in result.items], meta=result.meta())


@bp.get("/<sequence_id>/enrollments/<enrollment_id>")
def get_enrollment(sequence_id: str, enrollment_id: str):
    return ok(
        enrollment_to_api(services().enrollment.get_enrollment(caller(), KIND, sequence_id, enrollment_id))
    )


@bp.patch("/<sequence_id>/enrollments/<enrollment_id>")
def update_enrollment(sequence_id: str, enrollment_id: str):
    enrollment = services().enrollment.set_status(
        caller(), KIND, sequence_id, enrollment_id, body()["status"]
    )
    return ok(enrollment_to_api(enrollment))


@bp.delete("/<sequence_id>/enrollments/<enrollment_id>")
def exit_enrollment(sequence_id: str, enrollment_id: str):
    enrollment = services().enrollment.exit(caller(), KIND, sequence_id, enrollment_id, query()["reason"])
    return ok(enrollment_to_api(enrollment))


@bp.post("/<sequence_id>/unenroll")
def unenroll(sequence_id: str):
    # The bot dialect marks the enrollment completed (a sequence holds one live enrollment per contact).
    [enrollment] = services().enrollment.unenroll(
        caller(), KIND, sequence_id, contact_ref(body() or {}), status=EnrollmentStatus.COMPLETED
    )
    return ok(
        {
            "id": enrollment["id"],
            "status": enrollment["status"],
            "sequence_id": enrollment["sequence_id"],
            "contact_id": enrollment["contact_id"],
        }
    )

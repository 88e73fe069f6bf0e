"""The event-queue dialect (seed 000): queues with steps, enrollment timer tasks, bulk enroll.

A thin adapter over the same sequence and enrollment services as the sequences dialect, with
kind ``event_queue``: it maps field names, enforces the dialect's request rules (exactly one
targeting mode, the 500 cap) and shapes the answers.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from seqbridge.errors import BadRequest
from seqbridge.services.common import decode_cursor, encode_cursor, format_time
from seqbridge.services.contacts import ContactRef
from seqbridge.services.sequences import SequenceKind
from seqbridge.web.definitions import add_definition_routes
from seqbridge.web.envelope import body, caller, ok, query, time_param
from seqbridge.web.pipeline import services

bp = Blueprint("event_queues", __name__, url_prefix="/api/v1/event-queues")
KIND = SequenceKind.EVENT_QUEUE
MAX_TARGETS = 500

# The dialect's action types and task statuses, and ours.
ACTIONS = {
    "send_email": "email",
    "send_webhook": "webhook",
    "add_tag": "add_tag",
    "update_contact": "update_contact",
}
ACTION_NAMES = {v: k for k, v in ACTIONS.items()}
TASK_STATUS = {
    "pending": "pending",
    "paused": "paused",
    "leased": "processing",
    "done": "completed",
    "cancelled": "cancelled",
    "failed": "failed",
}
TASK_STATUS_FILTER = {v: k for k, v in TASK_STATUS.items()}


# Shapes ---------------------------------------------------------------------------------------


def queue_to_api(row: dict[str, Any]) -> dict[str, Any]:
    data = {
        "id": row["id"],
        "organization_id": row["org_id"],
        "name": row["name"],
        "description": row["description"],
        "status": row["status"],
        "send_window": row["send_window"],
        "total_enrolled": row["total_enrolled"],
        "total_completed": row["total_completed"],
        "created_at": format_time(row["created_at"]),
        "updated_at": format_time(row["updated_at"]),
    }
    if "steps" in row:
        data["steps"] = [step_to_api(s) for s in row["steps"]]
    return data


def step_to_api(row: dict[str, Any]) -> dict[str, Any]:
    action = row["action"]
    if action == "email":
        config = {"subject": row["subject"], "body": row["body"]}
    elif action == "webhook":
        config = {"url": row["webhook_url"]}
    else:
        config = row["config"] or {}
    return {
        "id": row["id"],
        "event_queue_id": row["sequence_id"],
        "position": row["position"],
        "delay_days": row["delay_days"],
        "delay_minutes": row["delay_minutes"],
        "delay_from": "enrollment" if row["delay_anchor"] == "enrollment" else "previous_step",
        "action_type": ACTION_NAMES[action],
        "action_config": config,
        "created_at": format_time(row["created_at"]),
        "updated_at": format_time(row["updated_at"]),
    }


def task_to_api(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "event_queue_id": row["sequence_id"],
        "step_id": row["step_id"],
        "step_position": row["position"],
        "enrollment_id": row["enrollment_id"],
        "status": TASK_STATUS[row["status"]],
        "scheduled_for": format_time(row["scheduled_for"]),
        "enrollment_time": format_time(row["enrollment_time"]),
        "contact_id": row["contact_id"],
        "customer_id": row["company_id"],
        "deal_id": row["deal_id"],
        "attempts": row["attempts"],
        "last_error": row["last_error"],
        "created_at": format_time(row["created_at"]),
        "completed_at": format_time(row["finished_at"]) if row["status"] == "done" else None,
    }


def _step_fields(given: dict[str, Any]) -> dict[str, Any]:
    """The dialect's step body in our terms: action_type/action_config, delay_from."""
    fields = {k: given[k] for k in ("position", "delay_days", "delay_minutes") if k in given}
    if "delay_from" in given:
        fields["delay_anchor"] = "enrollment" if given["delay_from"] == "enrollment" else "previous"
    if "action_type" in given:
        fields["action"] = ACTIONS[given["action_type"]]
    if "action_config" in given:
        config = given["action_config"] or {}
        fields.update(
            subject=config.get("subject"),
            body=config.get("body"),
            webhook_url=config.get("url"),
            config={k: v for k, v in config.items() if k not in ("subject", "body", "url")},
        )
    return fields


def _offset(cursor: str | None) -> int:
    return max(0, decode_cursor(cursor, {"offset": int})["offset"]) if cursor else 0


# Queues ---------------------------------------------------------------------------------------


@bp.get("")
def list_queues():
    q = query()
    offset = _offset(q.get("cursor"))
    result = services().sequences.list_sequences(caller(), KIND, q.get("status"), q["limit"], offset)
    following = result.next_offset
    meta = {
        "limit": q["limit"],
        "next_cursor": encode_cursor({"offset": following}) if following else None,
        "has_more": following is not None,
        "total": result.total,
    }
    return ok([queue_to_api(r) for r in result.items], meta=meta)


add_definition_routes(
    bp, kind=KIND, id_param="queue_id", shape=queue_to_api, shape_step=step_to_api, step_fields=_step_fields
)


# Enrollments ----------------------------------------------------------------------------------


@bp.get("/<queue_id>/enrollments")
def list_tasks(queue_id: str):
    q = query()
    statuses = (TASK_STATUS_FILTER[q["status"]],) if q.get("status") else None
    result = services().enrollment.list_tasks(caller(), KIND, queue_id, statuses, q.get("cursor"), q["limit"])
    return ok([task_to_api(r) for r in result.items], meta=result.meta())


@bp.post("/<queue_id>/bulk-enroll")
def bulk_enroll(queue_id: str):
    given = body()
    modes = [m for m in ("contact_ids", "contact_filter", "customer_filter") if given.get(m) is not None]
    if len(modes) != 1:
        raise BadRequest(
            "Give exactly one targeting mode: contact_ids (a list of up to 500 contact ids), contact_filter "
            "(contact fields) or customer_filter (company fields)."
            + (f" Got {len(modes)}: {', '.join(modes)}." if modes else " Got none."),
            code="targeting_mode",
            details={"modes": ["contact_ids", "contact_filter", "customer_filter"], "given": modes},
        )
    options = {
        "skip_if_already_enrolled": given.get("skip_if_already_enrolled", True),
        "anchor": time_param(given.get("enrollment_time")),
        "deal_id": given.get("deal_id"),
        "source": given.get("enrollment_source") or "api_bulk",
    }
    enrollment = services().enrollment
    if modes == ["contact_ids"]:
        if len(given["contact_ids"]) > MAX_TARGETS:
            raise BadRequest(
                f"contact_ids takes at most {MAX_TARGETS} ids (got {len(given['contact_ids'])}).",
                code="too_many_contacts",
                details={"limit": MAX_TARGETS},
            )
        result = enrollment.enroll_bulk(
            caller(), KIND, queue_id, customer_ids=given["contact_ids"], max_contacts=MAX_TARGETS, **options
        )
        has_more, next_cursor = False, None
    else:
        result = enrollment.enroll_matching(
            caller(),
            KIND,
            queue_id,
            contact_filter=given.get("contact_filter"),
            customer_filter=given.get("customer_filter"),
            cursor=given.get("cursor"),
            resume=True,
            limit=MAX_TARGETS,
            **options,
        )
        has_more, next_cursor = result.has_more, result.next_cursor
    answer = {
        "enrolled": result.enrolled,
        "skipped": result.skipped,
        "has_more": has_more,
        "next_cursor": next_cursor,
        "results": [_result_item(r) for r in result.results],
    }
    if modes != ["contact_ids"]:
        answer["already_enrolled"] = result.already_enrolled
    return ok(answer)


def _result_item(item: dict[str, Any]) -> dict[str, Any]:
    shaped: dict[str, Any] = {"contact_id": item["contact_id"] or item["input"], "status": item["status"]}
    if item["status"] == "enrolled":
        shaped["enrollment_id"] = item["enrollment_id"]
    else:
        shaped["code"], shaped["reason"] = item["code"], item["reason"]
    return shaped


@bp.post("/<queue_id>/unenroll")
def unenroll(queue_id: str):
    given = body()
    ended = services().enrollment.unenroll(caller(), KIND, queue_id, ContactRef("id", given["contact_id"]))
    return ok(
        {
            "id": ended[0]["id"],
            "status": ended[0]["status"],
            "event_queue_id": queue_id,
            "contact_id": given["contact_id"],
            "enrollments_ended": len(ended),
        }
    )

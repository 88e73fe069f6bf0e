"""Read-only views: the audit log, the outbox, and who-am-I for the calling key."""

from __future__ import annotations

from flask import Blueprint

from seqbridge.web.envelope import caller, ok, page, query, time_param
from seqbridge.web.pipeline import services

bp = Blueprint("audit", __name__, url_prefix="/api/v1")


@bp.get("/audit-events")
def list_audit_events():
    q = query()
    return page(
        services().audit_log.list_events(
            caller(),
            tags=q.get("tag"),
            subject_type=q.get("subject_type"),
            subject_id=q.get("subject_id"),
            actor_id=q.get("actor"),
            since=time_param(q.get("since")),
            until=time_param(q.get("until")),
            order=q.get("order", "desc"),
            cursor=q.get("cursor"),
            limit=q["limit"],
        )
    )


@bp.get("/outbox")
def list_outbox():
    """What the step processor sent, or captured when no SMTP is configured."""
    q = query()
    return page(
        services().outbox.list_messages(
            caller(),
            channel=q.get("channel"),
            status=q.get("status"),
            cursor=q.get("cursor"),
            limit=q["limit"],
        )
    )


@bp.get("/me")
def whoami():
    """The calling key and its organization; Zapier and n8n test a key with it and label the
    connection with the organization's name."""
    return ok(services().keys.describe(caller()))

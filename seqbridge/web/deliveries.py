"""The operator's view of webhook deliveries (``hooks:read`` / ``hooks:write``)."""

from __future__ import annotations

from flask import Blueprint

from seqbridge.services.mapping_diff import API_LIMIT
from seqbridge.web.envelope import body, caller, ok, page, query, time_param
from seqbridge.web.pipeline import services

bp = Blueprint("deliveries", __name__, url_prefix="/api/v1")


@bp.get("/deliveries")
def list_deliveries():
    q = query()
    return page(
        services().deliveries.list_deliveries(
            caller(),
            hook=q.get("hook"),
            statuses=q.get("status"),
            since=time_param(q.get("since")),
            until=time_param(q.get("until")),
            cursor=q.get("cursor"),
            limit=q["limit"],
        )
    )


@bp.get("/deliveries/<delivery_id>")
def get_delivery(delivery_id: str):
    return ok(services().deliveries.get_delivery(caller(), delivery_id))


@bp.post("/deliveries/<delivery_id>/replay")
def replay_delivery(delivery_id: str):
    return ok(services().deliveries.replay(caller(), delivery_id), 202)


@bp.get("/mappings")
def list_mappings():
    """Every loaded hook, with its status and, for an invalid one, its problems."""
    return ok(services().deliveries.mapping_statuses(caller()))


@bp.post("/mappings/dry-run")
def dry_run():
    """Plan what a payload would do on a hook: events, matched rules, actions. Nothing runs."""
    payload = body()
    spec = {k: payload[k] for k in ("body", "content_type", "headers", "query") if k in payload}
    return ok(services().deliveries.dry_run(caller(), payload["hook"], spec))


@bp.post("/mappings/diff")
def diff_mapping():
    """What a mapping file's text would change over the stored deliveries, against the running
    version: the report ``seqbridge mappings diff --json`` prints. Nothing runs."""
    payload = body()
    options = {k: payload[k] for k in ("file", "hook", "since") if k in payload}
    limit = payload.get("limit", API_LIMIT)
    return ok(services().mapping_diff.diff_submitted(caller(), payload["mapping"], limit=limit, **options))

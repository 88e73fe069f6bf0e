"""REST hooks (Zapier's convention, usable from n8n): subscribe a URL to an event, unsubscribe,
list, and the sample data a Zap editor shows (``hooks:read`` / ``hooks:write``)."""

from __future__ import annotations

from flask import Blueprint

from seqbridge.web.envelope import body, caller, no_content, ok, page, query
from seqbridge.web.pipeline import services

bp = Blueprint("subscriptions", __name__, url_prefix="/api/v1/hooks")


@bp.post("/subscriptions")
def subscribe():
    given = body()
    return ok(services().subscriptions.subscribe(caller(), given["target_url"], given["event"]), 201)


@bp.get("/subscriptions")
def list_subscriptions():
    q = query()
    return page(
        services().subscriptions.list(
            caller(), event=q.get("event"), cursor=q.get("cursor"), limit=q["limit"]
        )
    )


@bp.get("/subscriptions/<subscription_id>")
def get_subscription(subscription_id: str):
    return ok(services().subscriptions.get(caller(), subscription_id))


@bp.delete("/subscriptions/<subscription_id>")
def unsubscribe(subscription_id: str):
    services().subscriptions.unsubscribe(caller(), subscription_id)
    return no_content()


@bp.get("/samples/<event>")
def samples(event: str):
    """Zapier's perform list: recent real events of this kind, or an example."""
    return ok(services().subscriptions.samples(caller(), event))

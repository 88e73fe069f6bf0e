"""The audit log (filter, verify the chain), API keys, and REST hook subscriptions."""

from __future__ import annotations

from flask import redirect, render_template, request, url_for

from seqbridge.audit import AuditTag, verify_chain
from seqbridge.services.keys import ALL_SCOPES, SCOPES
from seqbridge.services.subscriptions import EVENTS
from seqbridge.web.console import bp
from seqbridge.web.console.deliveries import parse_time
from seqbridge.web.console.session import caller, can, require
from seqbridge.web.pipeline import services

PAGE = 50


# The audit log --------------------------------------------------------------------------------


def _audit_page(verification=None):
    require("audit:read")
    args = request.args
    tags = [t for t in args.getlist("tag") if t]
    page = services().audit_log.list_events(
        caller(),
        tags=tags or None,
        subject_type=args.get("subject_type") or None,
        subject_id=args.get("subject_id") or None,
        actor_id=args.get("actor_id") or None,
        since=parse_time("since"),
        until=parse_time("until"),
        cursor=args.get("cursor"),
        limit=PAGE,
    )
    return render_template(
        "console/audit.html",
        page=page,
        tags=tags,
        all_tags=sorted(t.value for t in AuditTag),
        verification=verification,
    )


@bp.get("/audit")
def audit():
    return _audit_page()


@bp.post("/audit/verify")
def audit_verify():
    """Walk this organization's hash chain now and show the result on the audit page."""
    require("audit:read")
    checked, problems = verify_chain(services().db, caller().org_id)
    return _audit_page({"checked": checked, "problems": [str(p) for p in problems]})


# API keys -------------------------------------------------------------------------------------


@bp.get("/keys")
def keys():
    keys = services().org_keys.list(caller())  # only a * key (the service decides)
    return render_template("console/keys.html", keys=keys, scopes=(*SCOPES, ALL_SCOPES), created=None)


@bp.post("/keys")
def create_key():
    created = services().org_keys.create(
        caller(), request.form.get("name", ""), request.form.getlist("scope")
    )
    keys = services().org_keys.list(caller())
    # Rendered, not redirected: the raw key exists in this one answer (Cache-Control: no-store).
    return render_template("console/keys.html", keys=keys, scopes=(*SCOPES, ALL_SCOPES), created=created), 201


@bp.post("/keys/<key_id>/revoke")
def revoke_key(key_id: str):
    services().org_keys.revoke(caller(), key_id)
    if key_id == caller().actor.id:  # revoked the key this session runs on: the session is over
        return redirect(url_for("console.sign_in"), 303)
    return redirect(url_for("console.keys"), 303)


# REST hook subscriptions ------------------------------------------------------------------------


@bp.get("/subscriptions")
def subscriptions():
    require("hooks:read")
    page = services().subscriptions.list(caller(), event=None, cursor=request.args.get("cursor"), limit=PAGE)
    return render_template("console/subscriptions.html", page=page, events=list(EVENTS), created=None)


@bp.post("/subscriptions")
def create_subscription():
    require("hooks:write")
    created = services().subscriptions.subscribe(
        caller(), request.form.get("target_url", "").strip(), request.form.get("event", "")
    )
    page = services().subscriptions.list(caller(), event=None, cursor=None, limit=PAGE)
    return render_template("console/subscriptions.html", page=page, events=list(EVENTS), created=created), 201


@bp.post("/subscriptions/<subscription_id>/delete")
def delete_subscription(subscription_id: str):
    require("hooks:write")
    services().subscriptions.unsubscribe(caller(), subscription_id)
    return redirect(url_for("console.subscriptions"), 303)


__all__ = ["can"]

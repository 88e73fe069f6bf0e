"""Deliveries: the filtered, live list; search by provider id or contact; the detail; replay one;
replay everything a filter matches, as a job with progress."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from flask import redirect, render_template, request, url_for

from seqbridge.audit import redact
from seqbridge.errors import BadRequest, NotFound
from seqbridge.services.inbox import DeliveryStatus
from seqbridge.web.console import bp
from seqbridge.web.console.session import caller, require
from seqbridge.web.pipeline import services

PAGE = 50
RANGES = {
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "24h": timedelta(days=1),
    "7d": timedelta(days=7),
}
_PHONE = re.compile(r"^(?:whatsapp:)?\+?[\d\s().\-]{6,20}$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)


def parse_time(name: str) -> datetime | None:
    """A query parameter as an aware datetime (``…Z``, an offset, or naive = UTC)."""
    value = (request.args.get(name) or "").strip()
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(
            f"{name} is not a date and time (2026-01-05T09:30:00Z).", code="invalid_time"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def delivery_filter() -> dict:
    """hook, statuses, since, until from the query string (``range`` = a preset for since)."""
    statuses = [s for s in request.args.getlist("status") if s]
    wrong = [s for s in statuses if s not in DeliveryStatus.__members__.values()]
    if wrong:
        raise BadRequest(f"Unknown status {', '.join(wrong)}.", code="invalid_status")
    since = parse_time("since")
    preset = request.args.get("range")
    if since is None and preset in RANGES:
        since = services().clock.now() - RANGES[preset]
    return {
        "hook": request.args.get("hook") or None,
        "statuses": statuses or None,
        "since": since,
        "until": parse_time("until"),
    }


def search(text: str) -> tuple[list[dict], list[dict], str]:
    """Deliveries found by a search box: an email or phone (the contact's deliveries), a delivery
    id, or else a provider id. Returns (deliveries, contacts matched, what was searched)."""
    who = caller()
    if "@" in text:
        contact = services().contacts.find_by_email(who, text)
        contacts = [contact] if contact else []
        return (
            services().activity.deliveries_for_contacts(who, [c["id"] for c in contacts]),
            contacts,
            "email",
        )
    if _PHONE.match(text):
        try:
            contacts = services().contacts.find_by_phone(who, text)
        except BadRequest:
            contacts = []
        if contacts:
            found = services().activity.deliveries_for_contacts(who, [c["id"] for c in contacts])
            return found, contacts, "phone"
    if _UUID.match(text):
        try:
            return [services().deliveries.get_delivery(who, text)], [], "delivery id"
        except NotFound:
            pass
    return services().activity.find_by_provider_id(who, text), [], "provider id"


@bp.get("/deliveries")
def deliveries():
    require("hooks:read")
    flt = delivery_filter()
    text = (request.args.get("q") or "").strip()[:300]
    contacts, searched, next_cursor = [], None, None
    if text:
        rows, contacts, searched = search(text)
    else:
        page = services().deliveries.list_deliveries(
            caller(),
            hook=flt["hook"],
            statuses=flt["statuses"],
            since=flt["since"],
            until=flt["until"],
            cursor=request.args.get("cursor"),
            limit=PAGE,
        )
        rows, next_cursor = page.items, page.next_cursor
    live = not text and not request.args.get("cursor")
    template = (
        "console/_delivery_rows.html" if request.args.get("fragment") == "rows" else "console/deliveries.html"
    )
    hooks = sorted(
        {h["name"] for h in services().deliveries.mapping_statuses(caller())} | ({flt["hook"]} - {None})
    )
    return render_template(
        template,
        rows=rows,
        flt=flt,
        q=text,
        contacts=contacts,
        searched=searched,
        next_cursor=next_cursor,
        live=live,
        hooks=hooks,
        statuses=list(DeliveryStatus),
        ranges=RANGES,
    )


@bp.get("/deliveries/<delivery_id>")
def delivery(delivery_id: str):
    require("hooks:read")
    row = services().deliveries.get_delivery(caller(), delivery_id)
    row["request"]["body"] = redact(row["request"]["body"])  # an API key pasted into a body stays hidden
    audit = services().activity.delivery_audit(caller(), delivery_id, row["hook"])
    return render_template("console/delivery.html", d=row, audit=audit)


@bp.post("/deliveries/<delivery_id>/replay")
def replay_delivery(delivery_id: str):
    require("hooks:write")
    services().deliveries.replay(caller(), delivery_id)
    return redirect(url_for("console.delivery", delivery_id=delivery_id, replayed=1), 303)


@bp.get("/enrollments/<enrollment_id>")
def enrollment(enrollment_id: str):
    """An enrollment has no page of its own: it is shown on its contact's page."""
    row = services().activity.find_enrollment(caller(), enrollment_id)
    return redirect(url_for("console.contact", contact_id=row["contact_id"]) + f"#enrollment-{enrollment_id}")


# Replay by filter -----------------------------------------------------------------------------


def _job_filter() -> dict:
    flt = delivery_filter()
    statuses = flt["statuses"] or ["failed", "dead"]
    return services().replay_jobs.make_filter(flt["hook"], statuses, flt["since"], flt["until"])


@bp.get("/replays")
def replay_jobs():
    require("hooks:read")
    page = services().replay_jobs.list(caller(), cursor=request.args.get("cursor"), limit=PAGE)
    return render_template("console/replays.html", jobs=page.items, next_cursor=page.next_cursor)


@bp.get("/replays/new")
def new_replay_job():
    """The confirmation: what the filter matches now, and the button that starts the job."""
    require("hooks:write")
    flt = _job_filter()
    count = services().replay_jobs.count(caller(), flt)
    return render_template("console/replay_new.html", flt=flt, count=count)


@bp.post("/replays")
def start_replay_job():
    require("hooks:write")
    form = request.form
    statuses = [s for s in form.getlist("status") if s]
    since = (form.get("since") or "").strip() or None
    until = (form.get("until") or "").strip() or None
    try:
        since_at = datetime.fromisoformat(since.replace("Z", "+00:00")) if since else None
        until_at = datetime.fromisoformat(until.replace("Z", "+00:00")) if until else None
    except ValueError:
        raise BadRequest("since and until must be dates and times.", code="invalid_time") from None
    flt = services().replay_jobs.make_filter(form.get("hook") or None, statuses, since_at, until_at)
    job = services().replay_jobs.create(caller(), flt)
    return redirect(url_for("console.replay_job", job_id=job["id"]), 303)


@bp.get("/replays/<job_id>")
def replay_job(job_id: str):
    require("hooks:read")
    job = services().replay_jobs.get(caller(), job_id)
    template = (
        "console/_replay_progress.html"
        if request.args.get("fragment") == "progress"
        else "console/replay.html"
    )
    return render_template(template, job=job)


@bp.post("/replays/<job_id>/cancel")
def cancel_replay_job(job_id: str):
    require("hooks:write")
    services().replay_jobs.cancel(caller(), job_id)
    return redirect(url_for("console.replay_job", job_id=job_id), 303)

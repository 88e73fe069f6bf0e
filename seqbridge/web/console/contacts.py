"""Contacts: search by email, phone or tag; a contact's status, tags, enrollments and timeline."""

from __future__ import annotations

from flask import render_template, request

from seqbridge.errors import BadRequest
from seqbridge.web.console import bp
from seqbridge.web.console.session import caller, can, require
from seqbridge.web.pipeline import services

PAGE = 50


def _filters(text: str, by: str) -> dict:
    """What the search box means: ``by`` says, or else an @ is an email, digits a phone, the
    rest a tag."""
    if not text:
        return {}
    if by == "auto":
        by = "email" if "@" in text else "phone" if text.lstrip("+").replace(" ", "").isdigit() else "tag"
    if by not in ("email", "phone", "tag"):
        raise BadRequest("Search contacts by email, phone or tag.", code="invalid_search")
    return {by: text}


@bp.get("/contacts")
def contacts():
    require("contacts:read")
    text = (request.args.get("q") or "").strip()[:320]
    by = request.args.get("by") or "auto"
    try:
        offset = max(0, int(request.args.get("offset", 0)))
    except ValueError:
        offset = 0
    error = None
    try:
        page = services().contacts.list_contacts(caller(), _filters(text, by), PAGE, offset)
    except BadRequest as problem:  # e.g. a phone number that is not one
        page, error = None, problem.message
    return render_template("console/contacts.html", page=page, q=text, by=by, error=error)


@bp.get("/contacts/<contact_id>")
def contact(contact_id: str):
    require("contacts:read")
    person = services().contacts.get_contact(caller(), contact_id)
    activity = services().activity.contact_timeline(caller(), contact_id)
    # The timeline is audit events (audit:read) and deliveries (hooks:read), as on the API.
    if not can("audit:read"):
        activity["timeline"] = None
    elif not can("hooks:read"):
        activity["timeline"] = [e for e in activity["timeline"] if e["kind"] != "delivery"]
    return render_template("console/contact.html", c=person, activity=activity)

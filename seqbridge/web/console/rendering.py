"""How console pages are rendered: template helpers, errors as pages, security headers."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from flask import Flask, g, render_template, request, url_for
from markupsafe import Markup
from werkzeug.datastructures import MultiDict

from seqbridge.errors import SeqbridgeError
from seqbridge.web.console import CSP
from seqbridge.web.console.session import can, wants_json

log = logging.getLogger("seqbridge.web")

#: Header values longer than this are folded into a <details> (a 10,000-character header stays readable).
LONG = 300


def _as_datetime(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def when(value: Any) -> Markup:
    """A <time> in UTC; console.js shows it in the browser's time zone, with UTC on hover."""
    moment = _as_datetime(value)
    if moment is None:
        return Markup('<span class="muted">—</span>')
    moment = moment.astimezone(UTC)
    iso = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    text = moment.strftime("%Y-%m-%d %H:%M:%S UTC")
    return Markup('<time datetime="{}" title="{}">{}</time>').format(iso, text, text)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = max(0.0, float(seconds))
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def pretty(value: Any) -> str:
    """JSON for a <pre>: indented, keys in their order (escaped by the template like any text)."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def pretty_body(text: str | None, content_type: str | None) -> str:
    if text is None:
        return ""
    if content_type and "json" in content_type:
        try:
            return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        except ValueError:
            return text
    return text


def url_with(**changes: Any) -> str:
    """This page's URL with some query parameters changed (None removes one): pagination and
    filter links keep every other filter."""
    args = MultiDict(request.args)
    for name, value in changes.items():
        args.poplist(name)
        if value is None or value == "":
            continue
        for item in value if isinstance(value, list | tuple) else [value]:
            args.add(name, item)
    query = "&".join(
        f"{escape_query(k)}={escape_query(v)}" for k, vs in args.lists() for v in vs if v not in (None, "")
    )
    return request.path + (f"?{query}" if query else "")


def escape_query(value: Any) -> str:
    from urllib.parse import quote

    return quote(str(value), safe="")


def short_id(value: str | None) -> str:
    """The end of an id: ids are time-ordered (UUIDv7), so their first characters are alike."""
    return "…" + value[-8:] if value and len(value) > 12 else (value or "")


def status_badge(status: str | None) -> Markup:
    return Markup('<span class="badge badge-{}">{}</span>').format(status or "none", status or "—")


_SET_UP: set[int] = set()


def init_rendering(app: Flask, bp) -> None:
    """Add the helpers, error pages and headers to the blueprint (once: it is shared by every app)."""
    if id(bp) in _SET_UP:
        return
    _SET_UP.add(id(bp))

    @bp.app_template_global()
    def csrf_token() -> str:
        session = g.get("console")
        return session.csrf_token if session else ""

    bp.add_app_template_global(can, "can")
    bp.add_app_template_global(url_with, "url_with")
    bp.add_app_template_filter(when, "when")
    bp.add_app_template_filter(duration, "duration")
    bp.add_app_template_filter(pretty, "pretty")
    bp.add_app_template_filter(pretty_body, "pretty_body")
    bp.add_app_template_filter(status_badge, "badge")
    bp.add_app_template_filter(short_id, "short")

    @bp.app_template_global()
    def actor_label(actor: dict) -> str:
        """Who did it: a key by the end of its id, a hook or worker by name."""
        if actor.get("type") == "api_key":
            return "key " + short_id(actor.get("id"))
        return f"{actor.get('type')} {actor.get('id')}"

    @bp.app_template_global()
    def long_value(text: Any) -> Markup:
        """A value shown whole when short, folded (first part + <details>) when long."""
        text = "" if text is None else str(text)
        if len(text) <= LONG:
            return Markup('<span class="value">{}</span>').format(text)
        return Markup(
            '<details class="long"><summary><span class="value">{}…</span> '
            '<span class="muted">({} characters; show all)</span></summary><span class="value">{}</span></details>'
        ).format(text[:LONG], len(text), text)

    @bp.errorhandler(SeqbridgeError)
    def _console_error(error: SeqbridgeError):
        if wants_json() or request.headers.get("HX-Request") == "true":
            from seqbridge.web.errors import _respond

            return _respond(error.status, error.code, error.message, error.details, dict(error.headers))
        return render_template("console/error.html", error=error), error.status

    @bp.errorhandler(404)
    def _console_not_found(_error):
        error = SeqbridgeError("There is nothing at this address.", code="not_found")
        error.status = 404
        return _console_error(error)

    @bp.after_request
    def _headers(response):
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
        response.headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
        if request.endpoint == "console.static":
            response.headers["Cache-Control"] = "public, max-age=3600"
        else:
            response.headers["Cache-Control"] = "no-store"
            response.headers["Vary"] = "Cookie"
        return response

    @bp.app_context_processor
    def _nav():
        return {
            "console_session": g.get("console"),
            "nav_endpoint": request.endpoint or "",
            "static": lambda name: url_for("console.static", filename=name),
        }

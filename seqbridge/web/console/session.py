"""Sign-in, sign-out, and the checks every console request goes through (session, CSRF, scope)."""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlsplit

from flask import current_app, g, redirect, render_template, request, url_for

from seqbridge.errors import Forbidden, ScopeDenied, Unauthorized
from seqbridge.services.keys import scope_granted
from seqbridge.web.console import bp
from seqbridge.web.pipeline import services

COOKIE = "seqbridge_console"
SECURE_COOKIE = "__Host-seqbridge_console"  # the __Host- prefix: Secure, Path=/, no Domain
SIGN_IN_COOKIE = "seqbridge_sign_in"
#: Views that need no session.
PUBLIC = {"console.sign_in", "console.static"}


def secure() -> bool:
    """Served over HTTPS: the public base URL says so (behind a proxy), or the request is."""
    return current_app.config.get("PUBLIC_BASE_URL", "").lower().startswith("https://") or request.is_secure


def cookie_name() -> str:
    return SECURE_COOKIE if secure() else COOKIE


def wants_json() -> bool:
    return request.headers.get("HX-Request") != "true" and request.accept_mimetypes.best == "application/json"


def caller():
    """The signed-in key as the services' caller."""
    return g.console.caller(g.request_id)


def can(scope: str) -> bool:
    """Does the signed-in key hold ``scope``? (Templates use it to show write controls.)"""
    session = g.get("console")
    return session is not None and scope_granted(session.scopes, scope)


def require(scope: str) -> None:
    """Raises :class:`ScopeDenied` unless the signed-in key holds ``scope``."""
    if not can(scope):
        raise ScopeDenied(scope)


def _safe_next(target: str | None) -> str:
    """Only a path on this site (never //host or a scheme): no open redirect after sign-in."""
    if not target:
        return url_for("console.overview")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("console.overview")
    return target


@bp.before_request
def _resume_session():
    g.console = None
    if request.endpoint == "console.static":
        return None
    g.console = services().sessions.resume(request.cookies.get(cookie_name()))
    if request.endpoint in PUBLIC:
        return None
    if g.console is None:
        if wants_json() or request.headers.get("HX-Request") == "true":
            raise Unauthorized("Your console session has ended; sign in again.", code="session_expired")
        return redirect(url_for("console.sign_in", next=request.full_path.rstrip("?")))
    if request.method == "POST":
        given = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token") or ""
        if not hmac.compare_digest(given.encode(), g.console.csrf_token.encode()):
            raise Forbidden(
                "This form has expired or did not come from the console; reload the page.", code="csrf_failed"
            )
    return None


@bp.get("/sign-in")
def sign_in():
    """The sign-in form (a signed-in browser goes straight on)."""
    if g.console is not None:
        return redirect(_safe_next(request.args.get("next")))
    return _sign_in_form(None, 200)


def _sign_in_form(error: str | None, status: int):
    # Login CSRF: a form token matched against a cookie (double submit), before any session exists.
    token = secrets.token_urlsafe(24)
    response = current_app.make_response(
        (
            render_template(
                "console/sign_in.html", error=error, form_token=token, next=request.values.get("next", "")
            ),
            status,
        )
    )
    response.set_cookie(
        SIGN_IN_COOKIE, token, httponly=True, samesite="Strict", secure=secure(), path="/sign-in"
    )
    return response


@bp.post("/sign-in")
def sign_in_post():
    expected = request.cookies.get(SIGN_IN_COOKIE) or ""
    given = request.form.get("form_token") or ""
    if not expected or not hmac.compare_digest(expected.encode(), given.encode()):
        raise Forbidden("The sign-in form has expired; reload the page and try again.", code="csrf_failed")
    try:
        token, _session = services().sessions.sign_in(
            request.form.get("api_key", ""), request.headers.get("User-Agent"), g.request_id
        )
    except Unauthorized:
        return _sign_in_form("That key is not valid, or it has been revoked.", 401)
    response = redirect(_safe_next(request.form.get("next")), 303)
    response.set_cookie(cookie_name(), token, httponly=True, samesite="Strict", secure=secure(), path="/")
    response.delete_cookie(SIGN_IN_COOKIE, path="/sign-in")
    return response


# /sign-in must be reachable without a session, in both methods.
PUBLIC.add("console.sign_in_post")


@bp.post("/sign-out")
def sign_out():
    services().sessions.sign_out(request.cookies.get(cookie_name()), g.request_id)
    response = redirect(url_for("console.sign_in"), 303)
    response.delete_cookie(cookie_name(), path="/", secure=secure(), httponly=True, samesite="Strict")
    return response

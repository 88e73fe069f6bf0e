"""Hooks and mappings: where each hook listens, its health and traffic; the playground (dry-run)."""

from __future__ import annotations

import json

from flask import current_app, render_template, request

from seqbridge.errors import BadRequest, SeqbridgeError
from seqbridge.web.console import bp
from seqbridge.web.console.session import caller, require
from seqbridge.web.pipeline import services

CONTENT_TYPES = ("application/json", "application/x-www-form-urlencoded", "text/plain")


def hook_url(name: str) -> str:
    """The URL to paste into the sender: the public base URL when set (behind a proxy)."""
    base = (current_app.config.get("PUBLIC_BASE_URL") or request.host_url).rstrip("/")
    return f"{base}/hooks/{name}"


@bp.get("/mappings")
def mappings():
    require("hooks:read")
    hooks = services().hook_catalog.hooks(caller())
    return render_template("console/mappings.html", hooks=hooks, hook_url=hook_url)


def _headers(text: str) -> dict[str, str]:
    """``Name: value`` lines (or a JSON object) into headers."""
    text = text.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError:
            raise BadRequest("The headers are not valid JSON.", code="invalid_headers") from None
        if not isinstance(value, dict):
            raise BadRequest("The headers must be a JSON object.", code="invalid_headers")
        return {str(k): str(v) for k, v in value.items()}
    headers = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise BadRequest(f"Header line {line[:80]!r} is not 'Name: value'.", code="invalid_headers")
        headers[name.strip()] = value.strip()
    return headers


@bp.route("/mappings/<hook>/playground", methods=["GET", "POST"])
def playground(hook: str):
    """Paste a body or pick a stored delivery; see the events and the planned actions. Nothing is
    stored or executed (the API's dry-run, which needs hooks:write)."""
    require("hooks:write")
    info = services().hook_catalog.hook(caller(), hook)
    recent = (
        services()
        .deliveries.list_deliveries(
            caller(), hook=hook, statuses=None, since=None, until=None, cursor=None, limit=20
        )
        .items
    )
    form = {
        "body": "",
        "content_type": CONTENT_TYPES[0],
        "headers": "",
        "delivery_id": request.args.get("delivery", ""),
    }
    result, error = None, None
    if request.method == "POST" or form["delivery_id"]:
        source = request.form if request.method == "POST" else request.args
        form.update({k: source.get(k, form[k]) for k in form})
        if request.method == "GET":
            form["delivery_id"] = request.args.get("delivery", "")
        try:
            if form["delivery_id"] and not form["body"].strip():
                spec, result = services().hook_catalog.try_delivery(caller(), hook, form["delivery_id"])
                form.update(body=spec["body"], content_type=spec["content_type"])
            else:
                spec = {
                    "body": form["body"],
                    "content_type": form["content_type"],
                    "headers": _headers(form["headers"]),
                }
                result = services().hook_catalog.try_payload(caller(), hook, spec)
        except SeqbridgeError as problem:
            if problem.status >= 500 and problem.code != "hook_misconfigured":
                raise
            error = problem
    return render_template(
        "console/playground.html",
        hook=info,
        recent=recent,
        form=form,
        result=result,
        error=error,
        content_types=CONTENT_TYPES,
    )

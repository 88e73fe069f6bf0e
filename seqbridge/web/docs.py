"""The contract, served as YAML and rendered with Swagger UI from assets shipped in the package."""

from __future__ import annotations

import json
import re
from importlib import resources

from flask import Blueprint, Response, current_app, render_template, request, send_from_directory

from seqbridge.web.pipeline import contract

bp = Blueprint("docs", __name__, template_folder="templates")

_ASSETS = str(resources.files("swagger_ui") / "static")

_INITIALIZER = """window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "%s",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "StandaloneLayout"
  });
};
"""


#: The top-level ``servers:`` block of openapi.yaml, up to the next top-level key.
_SERVERS = re.compile(r"^servers:\n(?:[ \t]+.*\n)+", re.MULTILINE)


def served_origin() -> str:
    """Where readers of the docs reach this server: ``PUBLIC_BASE_URL`` when set, else the origin
    (and script root) the request came to."""
    return (current_app.config.get("PUBLIC_BASE_URL") or request.url_root).rstrip("/")


@bp.get("/openapi.yaml")
def spec():
    """The contract as YAML, with ``servers`` naming the origin it was fetched from, so Swagger UI's
    "Try it out" and generated clients call this server, on any host and port. ``Accept:
    text/plain`` gets the same text as text/plain (shown inline)."""
    plain = request.accept_mimetypes.best_match(["application/yaml", "text/plain"]) == "text/plain"
    servers = f"servers:\n  - url: {json.dumps(served_origin())}\n    description: This server.\n"
    text = _SERVERS.sub(lambda _: servers, contract().text, count=1)
    return Response(text, mimetype="text/plain" if plain else "application/yaml")


@bp.get("/docs/mapping-schema.json")
def mapping_schema():
    """The JSON Schema of mapping files (editors can validate YAML against it)."""
    from seqbridge.mapping.registry import SCHEMA_PATH

    return Response(SCHEMA_PATH.read_text(), mimetype="application/schema+json")


@bp.get("/docs")
def page():
    return render_template("docs.html")


@bp.get("/docs/swagger-initializer.js")
def initializer():
    from flask import url_for

    return Response(_INITIALIZER % url_for("docs.spec"), mimetype="text/javascript")


@bp.get("/docs/assets/<path:filename>")
def asset(filename: str):
    return send_from_directory(_ASSETS, filename, max_age=86400)

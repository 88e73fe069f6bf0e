"""The contract, served as YAML and rendered with Swagger UI from assets shipped in the package."""

from __future__ import annotations

from importlib import resources

from flask import Blueprint, Response, render_template, request, send_from_directory

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


@bp.get("/openapi.yaml")
def spec():
    """The contract as YAML; ``Accept: text/plain`` gets the same text as text/plain (shown inline)."""
    plain = request.accept_mimetypes.best_match(["application/yaml", "text/plain"]) == "text/plain"
    return Response(contract().text, mimetype="text/plain" if plain else "application/yaml")


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

"""The operator console: server-rendered pages at ``/`` over the same services as the API.

A thin adapter, like the API blueprints: each view parses the request, calls a service with the
signed-in key's :class:`~seqbridge.context.Caller`, and renders a template. Around every view:

- the session is resumed from its cookie (:mod:`.session`): none, ended, idle or a revoked key
  sends the browser to the sign-in page (an XHR gets 401);
- every POST carries the session's CSRF token (a form field or ``X-CSRF-Token``), else 403;
- pages and actions check the key's scopes exactly as the API's contract does (403 with the
  same ``<area>_<level>_denied`` codes), and the services keep organizations apart (404);
- every answer carries a strict Content-Security-Policy: scripts and styles only from this
  package's static files, no inline script, no inline style, no frames, forms post here only.
"""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint(
    "console",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static/console",
)

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def init_app(app) -> None:
    """Register the console (its views import the services lazily through the pipeline)."""
    from seqbridge.web.console import (  # noqa: F401  (each module adds its views to bp)
        admin,
        contacts,
        deliveries,
        mappings,
        overview,
        sequences,
        session,
    )
    from seqbridge.web.console.rendering import init_rendering

    init_rendering(app, bp)
    app.register_blueprint(bp)

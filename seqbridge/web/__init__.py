"""The WSGI application: Flask blueprints only — parse, call a service, serialise."""

from __future__ import annotations

from typing import Any

from flask import Flask

from seqbridge.clock import SystemClock
from seqbridge.config import load_settings
from seqbridge.logs import configure_logging
from seqbridge.services import Services
from seqbridge.storage.db import Database
from seqbridge.web import errors, idempotency, pipeline
from seqbridge.web.contract import Contract


class SeqbridgeFlask(Flask):
    """Flask, remembering which of its functions are plain (not coroutines): Flask asks
    ``inspect`` again for every before- and after-request function and view on every request."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sync: dict[Any, Any] = {}

    def ensure_sync(self, func):  # type: ignore[override]
        known = self._sync.get(func)
        if known is None:
            known = self._sync[func] = super().ensure_sync(func)
        return known


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app: defaults, then ``SEQBRIDGE_*`` environment, then ``test_config``.

    ``test_config`` may also carry ``CLOCK`` (an injectable clock) besides any setting.
    """
    test_config = dict(test_config or {})
    clock = test_config.pop("CLOCK", None) or SystemClock()
    settings = load_settings(overrides=test_config)
    configure_logging(settings["LOG_LEVEL"], settings["LOG_FORMAT"])

    app = SeqbridgeFlask("seqbridge", static_folder=None)
    app.config.update(settings)
    app.config["MAX_CONTENT_LENGTH"] = settings["MAX_BODY_BYTES"]
    app.json.sort_keys = False

    db = Database(settings["DATABASE_URL"], settings)
    app.extensions["seqbridge"] = Services(db, clock, settings)
    # Validate every mapping now: problems are logged at start, and a broken hook answers 503.
    services = app.extensions["seqbridge"]
    services.inbox.load_mappings()
    # Record the version loaded (and each reload's): `mappings diff` compares against it.
    services.mapping_versions.watch(services.inbox.registry)
    app.extensions["seqbridge.contract"] = Contract.load(settings["OPENAPI_PATH"])

    errors.init_app(app)
    pipeline.init_app(app)
    idempotency.init_app(app)

    from seqbridge.web import (
        audit,
        companies,
        contacts,
        deliveries,
        docs,
        event_queues,
        health,
        hooks,
        replay_jobs,
        sequences,
        subscriptions,
    )

    app.register_blueprint(health.bp)
    app.register_blueprint(docs.bp)
    app.register_blueprint(contacts.contacts_bp)
    app.register_blueprint(contacts.customers_bp)
    app.register_blueprint(companies.bp)
    app.register_blueprint(audit.bp)
    app.register_blueprint(sequences.bp)
    app.register_blueprint(event_queues.bp)
    app.register_blueprint(hooks.bp)
    app.register_blueprint(replay_jobs.bp)
    app.register_blueprint(deliveries.bp)
    app.register_blueprint(subscriptions.bp)

    from seqbridge.web import console

    console.init_app(app)  # the operator console at /
    if app.config["HOOKS_LANE"]:
        from seqbridge.web.hook_lane import HookLane

        app.wsgi_app = HookLane(app, app.wsgi_app)  # type: ignore[method-assign]
    return app

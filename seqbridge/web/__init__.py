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


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app: defaults, then ``SEQBRIDGE_*`` environment, then ``test_config``.

    ``test_config`` may also carry ``CLOCK`` (an injectable clock) besides any setting.
    """
    test_config = dict(test_config or {})
    clock = test_config.pop("CLOCK", None) or SystemClock()
    settings = load_settings(overrides=test_config)
    configure_logging(settings["LOG_LEVEL"], settings["LOG_FORMAT"])

    app = Flask("seqbridge", static_folder=None)
    app.config.update(settings)
    app.config["MAX_CONTENT_LENGTH"] = settings["MAX_BODY_BYTES"]
    app.json.sort_keys = False

    db = Database(settings["DATABASE_URL"], settings)
    app.extensions["seqbridge"] = Services(db, clock, settings)
    # Validate every mapping now: problems are logged at start, and a broken hook answers 503.
    app.extensions["seqbridge"].inbox.load_mappings()
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
    return app

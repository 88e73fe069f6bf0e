"""Settings: defaults, then the environment, then the overrides a test passes in."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

#: Every setting, with its default. The environment variable is ``SEQBRIDGE_`` + the name.
DEFAULTS: dict[str, Any] = {
    # SQLite file under ./var/ is the embedded default; PostgreSQL via postgresql://...
    "DATABASE_URL": f"sqlite:///{Path.cwd() / 'var' / 'seqbridge.db'}",
    "MAPPINGS_DIR": str(Path.cwd() / "mappings"),
    "OPENAPI_PATH": str(PROJECT_ROOT / "openapi.yaml"),
    # Request bodies larger than this are refused with 413.
    "MAX_BODY_BYTES": 1024 * 1024,
    "LOG_LEVEL": "INFO",
    # auto: JSON lines, unless stderr is a terminal (then readable text); json; text.
    "LOG_FORMAT": "auto",
    # ISO region (e.g. "US", "DE") for phone numbers written without +; empty: numbers must be
    # international, with or without the leading +.
    "DEFAULT_PHONE_REGION": "",
    # SQLite: how long a writer waits for the lock before giving up, in milliseconds.
    "SQLITE_BUSY_TIMEOUT_MS": 5000,
    # SQLite: FULL survives power loss, NORMAL survives process crashes only (WAL mode).
    "SQLITE_SYNCHRONOUS": "FULL",
    # SQLite: page cache per connection, in MiB (SQLite's own default is 2). Filled only as pages
    # are read; with the 2 MiB default, ingest slowed as the inbox's indexes outgrew it.
    "SQLITE_CACHE_MB": 16,
    # Outbound email: smtp://user:pass@host:587 (STARTTLS when the server offers it, or
    # ?starttls=require) or smtps://…:465. Empty: emails are captured in the outbox instead.
    "SMTP_URL": "",
    "SMTP_TIMEOUT_SECONDS": 15,
    "MAIL_FROM": "Seqbridge <seqbridge@localhost>",
    # Standard Webhooks signing secret (whsec_…) for webhook steps. Empty: one is generated into
    # ./var/webhook-secret on first use (the embedded default); set it for multi-host deployments.
    "WEBHOOK_SECRET": "",
    "WEBHOOK_TIMEOUT_SECONDS": 10,
    # Webhook steps and remote targets refuse private, loopback and link-local addresses unless this is true.
    "ALLOW_PRIVATE_TARGETS": "false",
    # The step processor.
    "PROCESSOR_BATCH": 50,
    "PROCESSOR_LEASE_SECONDS": 60,
    "PROCESSOR_MAX_ATTEMPTS": 6,
    "PROCESSOR_POLL_SECONDS": 0.5,
    "RETRY_BASE_SECONDS": 30,
    "RETRY_MAX_SECONDS": 3600,
    # REST hook subscriptions (sent by the processor, with its attempts and backoff): one whose
    # every send has failed for this long is disabled.
    "HOOK_DISABLE_AFTER_SECONDS": 86400,
    # Webhook deliveries: attempts before a delivery is dead, and the backoff between them.
    "DELIVERY_MAX_ATTEMPTS": 8,
    # Deliveries one worker claims and settles together (one transaction, a few statements).
    "DELIVERY_BATCH": 200,
    # Claims take the deliveries a ``priority: high`` rule marked at receipt (opt-outs) before
    # every ordinary one; false: strictly in due order (to compare, or to turn it off).
    "DELIVERY_PRIORITY": "true",
    "DELIVERY_RETRY_BASE_SECONDS": 5,
    "DELIVERY_RETRY_MAX_SECONDS": 1800,
    # Webhooks (POST /hooks/<name> with a Content-Length, no query string) are answered by a lane
    # in front of Flask that runs the same checks with less machinery; false: Flask takes them all.
    "HOOKS_LANE": "true",
    # The public base URL senders call (https://hooks.example.com): Twilio and others sign the URL
    # they called, which behind a proxy is not the one Seqbridge sees. Empty: the request's own URL.
    "PUBLIC_BASE_URL": "",
    # Seconds between checks of the mappings directory for changes; 0 turns watching off.
    "MAPPINGS_WATCH_SECONDS": 2,
    # The operator console: a session ends after this many minutes without a request, and
    # after this many hours in any case (sign in again).
    "CONSOLE_IDLE_MINUTES": 30,
    "CONSOLE_SESSION_HOURS": 12,
    # Replay by filter: deliveries replayed per batch (one transaction each) of a replay job.
    "REPLAY_JOB_BATCH": 50,
    # Connection pool for PostgreSQL.
    "DB_POOL_SIZE": 5,
    "DB_MAX_OVERFLOW": 15,
}

_INT_SETTINGS = {
    "MAX_BODY_BYTES",
    "SQLITE_BUSY_TIMEOUT_MS",
    "DB_POOL_SIZE",
    "DB_MAX_OVERFLOW",
    "SMTP_TIMEOUT_SECONDS",
    "WEBHOOK_TIMEOUT_SECONDS",
    "PROCESSOR_BATCH",
    "PROCESSOR_LEASE_SECONDS",
    "PROCESSOR_MAX_ATTEMPTS",
    "RETRY_BASE_SECONDS",
    "RETRY_MAX_SECONDS",
    "DELIVERY_MAX_ATTEMPTS",
    "DELIVERY_RETRY_BASE_SECONDS",
    "DELIVERY_BATCH",
    "DELIVERY_RETRY_MAX_SECONDS",
    "HOOK_DISABLE_AFTER_SECONDS",
    "SQLITE_CACHE_MB",
    "CONSOLE_IDLE_MINUTES",
    "CONSOLE_SESSION_HOURS",
    "REPLAY_JOB_BATCH",
}
_FLOAT_SETTINGS = {"PROCESSOR_POLL_SECONDS", "MAPPINGS_WATCH_SECONDS"}
_BOOL_SETTINGS = {"ALLOW_PRIVATE_TARGETS", "DELIVERY_PRIORITY", "HOOKS_LANE"}


class ConfigError(ValueError):
    """A setting has a value Seqbridge cannot use."""


def load_settings(
    environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Return the settings: defaults, then ``SEQBRIDGE_*`` variables, then ``overrides``.

    Raises :class:`ConfigError` when a value has the wrong type or is out of range.
    """
    environ = os.environ if environ is None else environ
    settings = dict(DEFAULTS)
    for name in DEFAULTS:
        raw = environ.get(f"SEQBRIDGE_{name}")
        if raw is not None and raw != "":
            settings[name] = raw
    if overrides:
        settings.update(overrides)
    for name in _INT_SETTINGS:
        try:
            settings[name] = int(settings[name])
        except (TypeError, ValueError):
            raise ConfigError(f"SEQBRIDGE_{name} must be an integer, got {settings[name]!r}") from None
        if settings[name] < 0:
            raise ConfigError(f"SEQBRIDGE_{name} must not be negative")
    for name in _FLOAT_SETTINGS:
        try:
            settings[name] = float(settings[name])
        except (TypeError, ValueError):
            raise ConfigError(f"SEQBRIDGE_{name} must be a number, got {settings[name]!r}") from None
    for name in _BOOL_SETTINGS:
        value = settings[name]
        if not isinstance(value, bool):
            text = str(value).strip().lower()
            if text not in ("true", "false", "1", "0", "yes", "no"):
                raise ConfigError(f"SEQBRIDGE_{name} must be true or false, got {value!r}")
            settings[name] = text in ("true", "1", "yes")
    settings["LOG_FORMAT"] = str(settings["LOG_FORMAT"]).lower()
    if settings["LOG_FORMAT"] not in ("auto", "json", "text"):
        raise ConfigError("SEQBRIDGE_LOG_FORMAT must be auto, json or text")
    settings["LOG_LEVEL"] = str(settings["LOG_LEVEL"]).upper()
    if settings["LOG_LEVEL"] not in LOG_LEVELS:
        raise ConfigError(f"SEQBRIDGE_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}")
    if not 1 <= settings["SQLITE_CACHE_MB"] <= 4096:
        raise ConfigError("SEQBRIDGE_SQLITE_CACHE_MB must be between 1 and 4096")
    for name in ("CONSOLE_IDLE_MINUTES", "CONSOLE_SESSION_HOURS", "REPLAY_JOB_BATCH"):
        if settings[name] < 1:
            raise ConfigError(f"SEQBRIDGE_{name} must be at least 1")
    settings["SQLITE_SYNCHRONOUS"] = str(settings["SQLITE_SYNCHRONOUS"]).upper()
    if settings["SQLITE_SYNCHRONOUS"] not in ("FULL", "NORMAL", "EXTRA"):
        raise ConfigError("SEQBRIDGE_SQLITE_SYNCHRONOUS must be FULL, NORMAL or EXTRA")
    return settings

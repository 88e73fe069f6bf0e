"""Logging: one JSON object per line for machines, or a readable line in a terminal.

Every line carries the request id, and, where they apply, the organization, the hook and the
delivery id (``extra={"hook": …, "delivery_id": …, "org": …}`` on a log call, or the current
request's caller). Messages are written by us and never carry a secret; request lines log the
path without its query string (a ``?token=`` stays out of the logs).
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

from flask import g, has_app_context, has_request_context

#: Context fields copied from a record's ``extra`` (or the request) into every line.
CONTEXT = ("request_id", "org", "hook", "delivery_id", "method", "path", "status", "duration_ms")
FORMATS = ("auto", "json", "text")
#: The request id of a request answered outside Flask (the webhook lane, :mod:`seqbridge.web.hook_lane`).
REQUEST_ID: ContextVar[str | None] = ContextVar("seqbridge_request_id", default=None)


class ContextFilter(logging.Filter):
    """Adds the request id, and the caller's organization, from the current request."""

    def filter(self, record: logging.LogRecord) -> bool:
        in_app = has_app_context()
        if not getattr(record, "request_id", None):
            record.request_id = getattr(g, "request_id", None) if in_app else REQUEST_ID.get()
        if not getattr(record, "org", None) and in_app and has_request_context():
            caller = getattr(g, "caller", None)
            record.org = caller.org_id if caller is not None else None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        context = " ".join(
            f"{name}={getattr(record, name)}"
            for name in CONTEXT[1:]
            if getattr(record, name, None) is not None
        )
        record.context = f" {context}" if context else ""
        record.request_id_text = getattr(record, "request_id", None) or "-"
        return super().format(record)


def configure_logging(level: str, fmt: str = "auto") -> None:
    """Configure the ``seqbridge`` logger once per process: JSON lines unless stderr is a
    terminal (``fmt`` ``auto``), or as ``fmt`` says."""
    logger = logging.getLogger("seqbridge")
    logger.setLevel(level)
    if any(getattr(h, "_seqbridge", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler()
    handler._seqbridge = True  # type: ignore[attr-defined]
    handler.addFilter(ContextFilter())
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler.setFormatter(
        JsonFormatter()
        if as_json
        else TextFormatter("%(asctime)s %(levelname)s %(name)s [%(request_id_text)s] %(message)s%(context)s")
    )
    logger.addHandler(handler)
    logger.propagate = False

"""Logging setup. Every line carries the request id when there is one."""

from __future__ import annotations

import logging

from flask import g, has_app_context


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = getattr(g, "request_id", "-") if has_app_context() else "-"
        return True


def configure_logging(level: str) -> None:
    """Configure the ``seqbridge`` logger once per process."""
    logger = logging.getLogger("seqbridge")
    logger.setLevel(level)
    if not any(getattr(h, "_seqbridge", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler._seqbridge = True  # type: ignore[attr-defined]
        handler.addFilter(RequestIdFilter())
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        )
        logger.addHandler(handler)
        logger.propagate = False

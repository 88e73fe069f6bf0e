"""Liveness and readiness."""

from __future__ import annotations

from flask import Blueprint

from seqbridge.errors import SeqbridgeError, ServiceUnavailable
from seqbridge.storage.migrate import current_revision, head_revision
from seqbridge.web.envelope import ok
from seqbridge.web.pipeline import services

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """The process is up and answering."""
    return ok({"status": "ok"})


@bp.get("/readyz")
def readyz():
    """The database answers and its schema is current."""
    db = services().db
    try:
        db.ping()
        revision = current_revision(db)
    except SeqbridgeError as error:
        raise ServiceUnavailable(
            "Not ready: the database is unavailable.",
            code="not_ready",
            details={"database": error.message},
            headers={"Retry-After": "5"},
        ) from error
    except Exception as error:  # any driver error means "not ready", never a 500
        raise ServiceUnavailable(
            "Not ready: the database is unavailable.",
            code="not_ready",
            details={"database": type(error).__name__},
            headers={"Retry-After": "5"},
        ) from error
    head = head_revision()
    if revision != head:
        raise ServiceUnavailable(
            "Not ready: the database schema is not current; run `seqbridge init`.",
            code="not_ready",
            details={"database": "ok", "schema_revision": revision, "expected_revision": head},
        )
    counts = services().outbox.processor_counts()
    backlog = services().deliveries.backlog()
    return ok(
        {
            "status": "ready",
            "database": "ok",
            "schema_revision": revision,
            "processor": counts,
            "deliveries": backlog,
        }
    )


@bp.get("/metrics")
def prometheus_metrics():
    """Prometheus exposition: requests, webhook deliveries and rejections, action outcomes,
    ingest-to-action latency, and the processor's and the inbox's queues."""
    from flask import Response

    from seqbridge import metrics

    body = metrics.render(services().deliveries.queue_counts)
    return Response(body, mimetype="text/plain", content_type="text/plain; version=0.0.4; charset=utf-8")

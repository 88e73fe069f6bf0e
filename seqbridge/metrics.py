"""Prometheus metrics (``prometheus_client``), in multiprocess mode when ``PROMETHEUS_MULTIPROC_DIR``
is set (``seqbridge serve`` sets it for gunicorn's workers and the background worker alike).

Counters are counted where things happen; queue depths (due, leased, retrying, dead, …) are
read from the database at scrape time, so every process reports the same truth.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

REQUESTS = Counter(
    "seqbridge_http_requests", "HTTP requests answered, by route and status", ["route", "method", "status"]
)
DELIVERIES = Counter(
    "seqbridge_webhook_deliveries", "Webhook deliveries received, by hook and outcome", ["hook", "outcome"]
)
REJECTIONS = Counter(
    "seqbridge_webhook_rejections", "Webhook requests refused, by hook and reason", ["hook", "reason"]
)
PROCESSED = Counter(
    "seqbridge_webhook_processed", "Delivery attempts finished, by hook and status", ["hook", "status"]
)
ACTIONS = Counter(
    "seqbridge_actions", "Actions carried out, by target and outcome", ["target", "action", "outcome"]
)
REST_HOOKS = Counter(
    "seqbridge_rest_hook_sends",
    "REST hook notifications sent to subscribers, by event and outcome",
    ["event", "outcome"],
)
INGEST_TO_ACTION = Histogram(
    "seqbridge_ingest_to_action_seconds",
    "From a webhook's receipt to its actions being done",
    ["hook"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
)


class _QueueCollector:
    """Gauges read at scrape time: the step processor's, the delivery inbox's and the REST hooks' queues."""

    def __init__(self, read: Callable[[], dict[str, dict[str, int]]]) -> None:
        self.read = read

    def collect(self) -> Iterable[GaugeMetricFamily]:
        counts = self.read()
        steps = GaugeMetricFamily("seqbridge_processor_tasks", "Step tasks by state", labels=["state"])
        for state, value in sorted(counts.get("steps", {}).items()):
            steps.add_metric([state], value)
        deliveries = GaugeMetricFamily(
            "seqbridge_deliveries", "Webhook deliveries by status", labels=["status"]
        )
        for status, value in sorted(counts.get("deliveries", {}).items()):
            deliveries.add_metric([status], value)
        backlog = counts.get("backlog", {})
        waiting = GaugeMetricFamily(
            "seqbridge_deliveries_backlog",
            "Webhook deliveries waiting for a worker, by state",
            labels=["state"],
        )
        for state in ("due", "processing", "retrying"):
            waiting.add_metric([state], backlog.get(state, 0))
        oldest = GaugeMetricFamily(
            "seqbridge_deliveries_oldest_due_seconds", "How long the oldest due delivery has waited"
        )
        oldest.add_metric([], backlog.get("oldest_due_seconds", 0.0))
        notifications = GaugeMetricFamily(
            "seqbridge_rest_hook_notifications", "REST hook notifications by status", labels=["status"]
        )
        for status, value in sorted(counts.get("rest_hooks", {}).items()):
            notifications.add_metric([status], value)
        yield steps
        yield deliveries
        yield waiting
        yield oldest
        yield notifications


def render(read_queues: Callable[[], dict[str, dict[str, int]]]) -> bytes:
    """The exposition text: the counters (every process's, in multiprocess mode; else this
    process's) and the queue gauges."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        counters = CollectorRegistry()
        MultiProcessCollector(counters)
    else:
        counters = REGISTRY
    queues = CollectorRegistry()
    queues.register(_QueueCollector(read_queues))
    return generate_latest(counters) + generate_latest(queues)

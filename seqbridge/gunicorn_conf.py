"""Gunicorn defaults for Seqbridge: ``gunicorn -c python:seqbridge.gunicorn_conf 'seqbridge:create_app()'``.

Every value can be overridden on the command line or with GUNICORN_CMD_ARGS.
"""

import os

bind = os.environ.get("SEQBRIDGE_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("SEQBRIDGE_WEB_WORKERS", "2"))
worker_class = "gthread"
# Webhook requests spend most of their time waiting for a shared commit (the inbox's group
# commit): more threads make bigger batches. 16 doubled accepted webhooks/s over 4 (BENCHMARKS.md).
threads = int(os.environ.get("SEQBRIDGE_WEB_THREADS", "16"))
# Webhook senders give up after ~10-30 s; never hold a request longer than that.
timeout = 30
graceful_timeout = 20
keepalive = 5
# Bound memory growth from any leak: recycle workers now and then, staggered.
max_requests = 10000
max_requests_jitter = 1000
accesslog = None
errorlog = "-"
loglevel = os.environ.get("SEQBRIDGE_LOG_LEVEL", "info").lower()
# Gunicorn 27's control socket lives at one fixed path per user; several instances on one host
# would fight over it, and Seqbridge does not use it.
control_socket_disable = True


def child_exit(server, worker):
    """Let the metrics of a web process that ended be merged, not double-counted."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)

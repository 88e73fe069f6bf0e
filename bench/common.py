"""Shared by the benchmarks: a fresh database on each engine, and a timing helper."""

from __future__ import annotations

import gc
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from seqbridge.storage.db import Database
from seqbridge.storage.migrate import upgrade


@contextmanager
def database(engine: str, *, durable: bool = False) -> Iterator[str]:
    """Yield the URL of a fresh, migrated database on ``engine`` ("sqlite" or "postgresql").
    PostgreSQL runs without fsync unless ``durable`` (see ``tests.pg_server.start``)."""
    base = Path(tempfile.mkdtemp(prefix="seqbridge-bench-"))
    cleanup = [base]
    server = None
    try:
        if engine == "sqlite":
            url = f"sqlite:///{base}/bench.db"
        else:
            from tests import pg_server

            pg_base = Path(tempfile.mkdtemp(prefix="seqbridge-bench-pg-"))  # postgres must reach it
            cleanup.append(pg_base)
            server = pg_server.start(pg_base, durable=durable)
            import psycopg

            with psycopg.connect(
                f"host={server.host} port={server.port} user={server.user} dbname=postgres", autocommit=True
            ) as conn:
                conn.execute("CREATE DATABASE bench")
            url = server.url("bench")
        db = Database(url)
        upgrade(db)
        db.dispose()
        yield url
    finally:
        if server is not None:
            server.stop()
        for path in cleanup:
            shutil.rmtree(path, ignore_errors=True)


@contextmanager
def raw_transaction(services, engine: str) -> Iterator:
    """A DBAPI cursor in one write transaction on ``services``' database (the baselines' raw SQL)."""
    connection = services.db.engine.raw_connection()
    try:
        cursor = connection.cursor()
        begin(cursor, engine)
        yield cursor
        connection.commit()
    finally:
        connection.close()


def begin(cursor, engine: str) -> None:
    """Start a write transaction the way Seqbridge does (SQLite: take the write lock at once)."""
    if engine == "sqlite":
        cursor.execute("BEGIN IMMEDIATE")


def timed(fn: Callable[[], object]) -> float:
    gc.collect()  # start every sample from the same heap state
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def alternate(
    rounds: int, subject: Callable[[str], object], baseline: Callable[[str], object], fresh: Callable[[], str]
) -> tuple[list[float], list[float]]:
    """Time ``subject`` and ``baseline`` back to back for ``rounds`` rounds, each on a ``fresh()``
    input (a new sequence or queue), after one warm-up of each (imports, caches, prepared plans)."""
    subject(fresh())
    baseline(fresh())
    subject_times, baseline_times = [], []
    for _ in range(rounds):
        a, b = fresh(), fresh()
        subject_times.append(timed(lambda a=a: subject(a)))
        baseline_times.append(timed(lambda b=b: baseline(b)))
    return subject_times, baseline_times


def paired_ratio(subject: list[float], baseline: list[float]) -> float:
    """The median of per-round ratios: each pair ran back to back, so drift hits both alike."""
    return statistics.median(s / b for s, b in zip(subject, baseline, strict=True))


def summary(samples: list[float]) -> str:
    return (
        f"median {statistics.median(samples) * 1000:.1f} ms (min {min(samples) * 1000:.1f}, n={len(samples)})"
    )


def no_mappings() -> str:
    """An empty mappings directory: these benchmarks need no hooks (and the shipped examples
    would log their missing secrets)."""
    return tempfile.mkdtemp(prefix="seqbridge-bench-mappings-")


def whatsapp_body(*, sender: str, message_id: str, text: str, name: str = "Kim") -> bytes:
    """One WhatsApp Cloud API notification of a text message (the shape tests/test_hooks.py sends)."""
    digits = sender.lstrip("+")
    message = {
        "from": digits,
        "id": message_id,
        "timestamp": "1767607200",
        "type": "text",
        "text": {"body": text},
    }
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550000000", "phone_number_id": "PN1"},
        "contacts": [{"profile": {"name": name}, "wa_id": digits}],
        "messages": [message],
    }
    notification = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "WABA1", "changes": [{"field": "messages", "value": value}]}],
    }
    return json.dumps(notification, separators=(",", ":")).encode()

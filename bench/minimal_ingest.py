"""The second baseline for ``bench.ingest``: the least work a durable, deduplicated webhook ingest
can do on this stack (Flask under the same gunicorn settings, SQLite, Python).

Per request it does what no durable ingest can skip, and nothing else:

- verify the same ``X-Hub-Signature-256`` HMAC the app checks;
- parse the JSON body (the bare app parses it too) to read the dedupe key, the WhatsApp message id;
- claim that key and insert the raw body in one group-committed SQLite transaction (WAL,
  ``synchronous=FULL``: the commit is fsync'd before the answer), shared with whatever else
  this process received meanwhile;
- answer 202 ``queued`` (or 200 ``duplicate`` for a key seen before).

It shares the app's two storage primitives, :class:`~seqbridge.services.group_commit.GroupCommit`
and :class:`~seqbridge.storage.db.SQLiteWriteLock` (one writer at a time across the gunicorn
workers), and nothing else: no SQLAlchemy, no request pipeline, no audit, no JSON of headers.
Its table is one row per key (the key is the primary key, so claiming it *is* the insert).
The database is its own file, ``SEQBRIDGE_MINIMAL_DATABASE``::

    SEQBRIDGE_MINIMAL_DATABASE=/tmp/m.db python -m gunicorn -c python:seqbridge.gunicorn_conf \\
        'bench.minimal_ingest:app'
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sqlite3
import threading
import time

import uuid_utils
from flask import Flask, request

from seqbridge.services.group_commit import GroupCommit
from seqbridge.storage.db import SQLiteWriteLock

DATABASE = os.environ.get("SEQBRIDGE_MINIMAL_DATABASE", "minimal.db")
SECRET = os.environ.get("SEQBRIDGE_MINIMAL_SECRET", "bench-secret").encode()
BUSY_TIMEOUT_S = 5.0
SCHEMA = "CREATE TABLE IF NOT EXISTS receipts (key TEXT PRIMARY KEY, id TEXT NOT NULL, received_at REAL NOT NULL, body BLOB NOT NULL) WITHOUT ROWID"

app = Flask(__name__)


def connect(path: str) -> sqlite3.Connection:
    """A connection as the app opens them: WAL, synchronous=FULL, transactions begun by hand."""
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def create(path: str) -> None:
    """Create the database and its one table (the benchmark does it before gunicorn starts)."""
    conn = connect(path)
    conn.execute(SCHEMA)
    conn.close()


class Writer:
    """This process's connection and group commit (made after gunicorn forks the worker)."""

    def __init__(self) -> None:
        self.conn = connect(DATABASE)
        self.commit = GroupCommit(self.write, lock=SQLiteWriteLock(DATABASE, BUSY_TIMEOUT_S).held)

    def write(self, items: list[tuple[str, str, bytes]]) -> list[tuple[str, str]]:
        """One transaction for the batch; each item's answer: (``queued`` or ``duplicate``, the id
        of the delivery that holds its key)."""
        cursor = self.conn.cursor()
        now = time.time()
        cursor.execute("BEGIN IMMEDIATE")
        try:
            marks = ", ".join(["(?, ?, ?, ?)"] * len(items))
            params = [v for key, id_, body in items for v in (key, id_, now, body)]
            cursor.execute(
                f"INSERT OR IGNORE INTO receipts (key, id, received_at, body) VALUES {marks}", params
            )
            if cursor.rowcount == len(items):  # every key was new (the common case): no read-back
                answers = [("queued", id_) for _, id_, _ in items]
            else:
                keys = [key for key, _, _ in items]
                stored = dict(
                    cursor.execute(
                        f"SELECT key, id FROM receipts WHERE key IN ({', '.join('?' * len(keys))})", keys
                    ).fetchall()
                )
                answers = [
                    ("queued" if stored[key] == id_ else "duplicate", stored[key]) for key, id_, _ in items
                ]
            cursor.execute("COMMIT")
        except BaseException:
            cursor.execute("ROLLBACK")
            raise
        return answers


_writer: Writer | None = None
_lock = threading.Lock()


def writer() -> Writer:
    global _writer
    if _writer is None:
        with _lock:
            if _writer is None:
                _writer = Writer()
    return _writer


@app.post("/hooks/<hook_name>")
def receive(hook_name: str):
    """Verify, read the key, store durably, answer."""
    body = request.get_data()
    expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(request.headers.get("X-Hub-Signature-256", "").encode(), expected.encode()):
        return {"error": {"code": "signature_mismatch", "message": "bad signature", "details": {}}}, 401
    try:
        key = json.loads(body)["entry"][0]["changes"][0]["value"]["messages"][0]["id"]
    except (ValueError, LookupError, TypeError):
        return {"error": {"code": "malformed_payload", "message": "not a message", "details": {}}}, 400
    status, delivery_id = writer().commit.submit((str(key), str(uuid_utils.uuid7()), body))
    return {"data": {"delivery_id": delivery_id, "status": status}}, 202 if status == "queued" else 200


_STATUS = {202: "202 ACCEPTED", 200: "200 OK", 400: "400 BAD REQUEST", 401: "401 UNAUTHORIZED"}


def wsgi(environ, start_response):
    """The same minimal ingest without Flask: a plain WSGI callable (``bench.minimal_ingest:wsgi``),
    what the least work looks like when the framework is left out too (Seqbridge's webhook lane
    leaves Flask out of its webhooks)."""
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(environ.get("HTTP_X_HUB_SIGNATURE_256", "").encode(), expected.encode()):
        answer, code = (
            {"error": {"code": "signature_mismatch", "message": "bad signature", "details": {}}},
            401,
        )
    else:
        try:
            key = json.loads(body)["entry"][0]["changes"][0]["value"]["messages"][0]["id"]
        except (ValueError, LookupError, TypeError):
            answer, code = (
                {"error": {"code": "malformed_payload", "message": "not a message", "details": {}}},
                400,
            )
        else:
            status, delivery_id = writer().commit.submit((str(key), str(uuid_utils.uuid7()), body))
            answer = {"data": {"delivery_id": delivery_id, "status": status}}
            code = 202 if status == "queued" else 200
    out = (json.dumps(answer, separators=(",", ":")) + "\n").encode()
    start_response(_STATUS[code], [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
    return [out]

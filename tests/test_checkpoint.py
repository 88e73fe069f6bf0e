"""WAL checkpoints run in the background, never inside a commit (``seqbridge.storage.checkpoint``):
a commit under the write lock that every writer queues on must not also copy the WAL back into
the database file."""

from __future__ import annotations

import os
import sqlite3
import time

from sqlalchemy import text

from seqbridge.storage.checkpoint import Checkpointer
from seqbridge.storage.db import Database


def _write(db: Database, rows: int, size: int = 4000) -> None:
    with db.transaction() as tx:
        tx.conn.execute(text("CREATE TABLE IF NOT EXISTS filler (id INTEGER PRIMARY KEY, blob BLOB)"))
    for start in range(0, rows, 50):
        with db.transaction() as tx:
            tx.conn.execute(
                text("INSERT INTO filler (blob) VALUES (:b)"),
                [{"b": os.urandom(size)} for _ in range(min(50, rows - start))],
            )


def _wal_frames(path) -> tuple[int, int]:
    """(frames in the WAL, frames checkpointed), checkpointing passively as it looks."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        _, frames, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return frames, done
    finally:
        conn.close()


def test_commits_leave_the_wal_to_the_background_checkpointer(tmp_path):
    path = tmp_path / "c.db"
    db = Database(f"sqlite:///{path}")
    try:
        db._checkpointer = Checkpointer(str(path), interval=3600)  # this test's, and idle
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        _write(db, 2000)  # ~2,000 pages: SQLite's own checkpoint would have run at 1,000
        frames, done = _wal_frames(path)
        assert frames > 1500 and done == frames  # every page was still in the WAL: no commit copied it
    finally:
        db.dispose()


def test_a_writing_process_checkpoints_in_the_background(tmp_path):
    path = tmp_path / "b.db"
    db = Database(f"sqlite:///{path}")
    try:
        _write(db, 300)
        checkpointer = db.checkpointer
        assert checkpointer.pid == os.getpid()
        deadline = time.monotonic() + 30
        while checkpointer.rounds == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert checkpointer.rounds >= 1
        busy, frames, done = checkpointer.last
        assert busy == 0 and frames >= 300 and done == frames
        _write(db, 10)  # the next write starts the WAL over from its beginning
        frames_after, _ = _wal_frames(path)
        assert frames_after < frames
        with sqlite3.connect(path) as conn:
            assert conn.execute("SELECT count(*) FROM filler").fetchone() == (310,)
    finally:
        db.dispose()
    assert not checkpointer._thread.is_alive()  # dispose stops it

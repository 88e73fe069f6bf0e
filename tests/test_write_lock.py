"""The SQLite write lock across processes: a waiter sleeps until the holder lets go (no polling),
a holder killed with SIGKILL frees it, and a wait past the busy timeout is a 503."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import pytest

from seqbridge.errors import ServiceUnavailable
from seqbridge.storage.write_lock import SQLiteWriteLock

# Another process: take the lock, say so, hold it until told (a line on stdin), then let go.
HOLDER = """
import sys
from seqbridge.storage.write_lock import SQLiteWriteLock
lock = SQLiteWriteLock(sys.argv[1], 30)
with lock.held():
    print("held", flush=True)
    sys.stdin.readline()
print("released", flush=True)
"""


@pytest.fixture
def holder(tmp_path):
    database = str(tmp_path / "db.sqlite")
    command = [sys.executable, "-c", HOLDER, database]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    yield database, process
    if process.poll() is None:
        process.kill()
    process.wait(10)


def _acquire_in_thread(lock: SQLiteWriteLock) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def run() -> None:
        try:
            with lock.held():
                outcome["held"] = True
        except ServiceUnavailable as error:
            outcome["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_a_waiter_sleeps_until_the_other_process_lets_go(holder):
    database, process = holder
    # With a 60 s safety net, only the holder's wake-up can get the waiter the lock before its
    # 20 s timeout: it is woken, not polling.
    lock = SQLiteWriteLock(database, 20, safety_net=60)
    thread, outcome = _acquire_in_thread(lock)
    time.sleep(0.5)  # let it start waiting
    assert "held" not in outcome  # the other process has it
    process.stdin.write("go\n")
    process.stdin.flush()
    thread.join(30)
    assert outcome == {"held": True}
    assert lock.wakeups <= 3  # polling every 0.2 ms would have looked ~2,500 times


def test_a_holder_killed_with_sigkill_frees_the_lock(holder):
    database, process = holder
    lock = SQLiteWriteLock(database, 20)
    thread, outcome = _acquire_in_thread(lock)
    time.sleep(0.3)
    process.send_signal(signal.SIGKILL)  # no chance to let go or to wake anyone
    process.wait(10)
    thread.join(30)
    assert outcome == {"held": True}


def test_a_wait_past_the_busy_timeout_is_database_unavailable(holder):
    database, _ = holder
    lock = SQLiteWriteLock(database, 0.3)
    with pytest.raises(ServiceUnavailable) as caught, lock.held():
        pass
    assert caught.value.code == "database_unavailable" and caught.value.headers["Retry-After"] == "1"


def test_threads_of_one_process_take_turns(tmp_path):
    lock = SQLiteWriteLock(str(tmp_path / "db.sqlite"), 10)
    inside, most = [0], [0]
    guard = threading.Lock()

    def work() -> None:
        for _ in range(50):
            with lock.held():
                with guard:
                    inside[0] += 1
                    most[0] = max(most[0], inside[0])
                with lock.held():  # the holder may enter again
                    pass
                with guard:
                    inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert most[0] == 1

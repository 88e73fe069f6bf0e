"""Group commit: each request gets its own result, every item is written exactly once, batches
form under concurrency, and one bad item fails only itself."""

from __future__ import annotations

import threading
import time

import pytest

from seqbridge.services.group_commit import GroupCommit


def test_concurrent_items_share_batches_and_each_gets_its_own_result():
    batches: list[list[int]] = []
    gate = threading.Event()

    def write(items: list[int]) -> list[int]:
        if not batches:
            gate.wait(5)  # hold the first write so the others queue up behind it
        batches.append(list(items))
        return [n * 10 for n in items]

    commit = GroupCommit(write, max_batch=8)
    results: dict[int, int] = {}

    def submit(n: int) -> None:
        results[n] = commit.submit(n)

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(30)]
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    gate.set()
    for thread in threads:
        thread.join(10)
    assert results == {n: n * 10 for n in range(30)}
    written = [n for batch in batches for n in batch]
    assert sorted(written) == list(range(30))  # each exactly once
    assert max(len(b) for b in batches) == 8  # batches formed, bounded by max_batch
    assert len(batches) < 30


def test_a_bad_item_fails_alone_and_a_failed_batch_is_retried_item_by_item():
    def write(items: list[str]) -> list[str]:
        if "bad" in items:
            raise ValueError("bad item")
        return [s.upper() for s in items]

    commit = GroupCommit(write)
    assert commit.submit("ok") == "OK"
    with pytest.raises(ValueError, match="bad item"):
        commit.submit("bad")
    gate = threading.Barrier(3)
    outcomes: dict[str, object] = {}

    def submit(item: str) -> None:
        gate.wait()
        try:
            outcomes[item] = commit.submit(item)
        except ValueError as error:
            outcomes[item] = error

    threads = [threading.Thread(target=submit, args=(s,)) for s in ("a", "bad", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert outcomes["a"] == "A" and outcomes["b"] == "B" and isinstance(outcomes["bad"], ValueError)


def test_items_that_arrive_while_the_leader_waits_for_the_lock_join_its_batch():
    """The leader collects its batch only once it holds the lock (another process may be
    writing): whatever queued meanwhile goes into the same commit."""
    import contextlib

    database = threading.Lock()
    database.acquire()  # "another process" is writing
    batches: list[list[int]] = []

    @contextlib.contextmanager
    def lock():
        with database:
            yield

    commit = GroupCommit(lambda items: batches.append(list(items)) or items, lock=lock)
    threads = [threading.Thread(target=commit.submit, args=(n,)) for n in range(5)]
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    database.release()
    for thread in threads:
        thread.join(10)
    assert [sorted(b) for b in batches] == [[0, 1, 2, 3, 4]]

"""Group commit: many requests, one transaction, one fsync.

Every acknowledged webhook must be committed before its 2xx, and a durable commit costs a disk
flush. When requests arrive together, the first one to find no write in progress becomes the
*leader*: it takes the write lock, then everything waiting (its own item included), writes it in
one transaction and wakes the others, each with its own result. A request that arrives while a
write is in progress waits for the next batch. Alone, a request writes its own batch of one in
its own thread: there is no extra thread and no hand-off.

Waiting costs one blocked lock per request: each waiting thread sleeps on its own lock, which
the leader releases once (its item is written, or it is handed the lead).

If a batch fails, its items are written again one by one, so one bad item fails only itself. If
the write lock cannot be had (the database is busy past its timeout), everything waiting fails
with that error: it would only wait for the same busy database in turn.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")


class _Ticket:
    __slots__ = ("done", "error", "item", "result", "wake")

    def __init__(self, item: Any) -> None:
        self.item = item
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None
        #: Held until the ticket is written or its thread is handed the lead; the waiting
        #: thread blocks acquiring it. Released once per wake-up, acquired once per wait.
        self.wake = threading.Lock()
        self.wake.acquire()


class GroupCommit(Generic[Item]):
    def __init__(
        self,
        write: Callable[[list[Item]], list[Any]],
        *,
        max_batch: int = 64,
        lock: Callable[[], AbstractContextManager[Any]] = nullcontext,
        after: Callable[[], None] | None = None,
    ) -> None:
        """``write(items)`` stores them in one transaction and returns one result per item.

        ``lock()`` is taken by the leader *before* it collects its batch: while it waits for the
        database (another process may be writing), more items join the batch it will write.
        ``after()`` is called by the leader once a batch is written and the lock released (to
        announce it, say, without holding every other writer up); it must not raise.
        """
        self._write = write
        self._lock = lock
        self._after = after
        self._max_batch = max_batch
        self._mutex = threading.Lock()
        self._pending: list[_Ticket] = []
        self._writing = False

    def submit(self, item: Item) -> Any:
        """Store ``item`` (with whatever else is waiting); return its result once committed, or
        raise what writing it raised."""
        ticket = _Ticket(item)
        with self._mutex:
            self._pending.append(ticket)
            lead = not self._writing
            self._writing = True
        while True:
            if not lead:  # wait to be written, or to be handed the lead
                ticket.wake.acquire()
                if ticket.done:
                    return self._outcome(ticket)
            batch: list[_Ticket] = []
            try:
                with self._lock():
                    with self._mutex:
                        batch = self._pending[: self._max_batch]
                        del self._pending[: self._max_batch]
                    self._write_batch(batch)  # never raises: errors are kept per item
            except BaseException as error:  # the lock could not be had
                if not batch:
                    with self._mutex:  # everything waiting would wait for the same busy database
                        batch, self._pending = self._pending, []
                    for failed in batch:
                        failed.error = error
            finally:
                with self._mutex:
                    for written in batch:
                        written.done = True
                        if written is not ticket:
                            written.wake.release()
                    if self._pending:  # hand the lead to the oldest waiting item's thread
                        self._pending[0].wake.release()
                    else:
                        self._writing = False
            if self._after is not None and any(t.error is None for t in batch):
                self._after()
            if ticket.done:
                return self._outcome(ticket)
            lead = False  # our item did not fit in that batch: wait for the next leader

    def _write_batch(self, batch: list[_Ticket]) -> None:
        try:
            results = self._write([t.item for t in batch])
        except BaseException as error:
            if len(batch) == 1:
                batch[0].error = error
                return
            for ticket in batch:  # one bad item must not fail the others
                try:
                    ticket.result = self._write([ticket.item])[0]
                except BaseException as single:
                    ticket.error = single
            return
        for ticket, result in zip(batch, results, strict=True):
            ticket.result = result

    @staticmethod
    def _outcome(ticket: _Ticket) -> Any:
        if ticket.error is not None:
            raise ticket.error
        return ticket.result

"""``Idempotency-Key`` on the API's POST routes (as Stripe and the IETF draft define it).

The first request with a key runs and its answer is kept for 24 hours; a retry with the same key
and the same request gets that answer again (``Idempotent-Replayed: true``) and changes nothing.
The same key with a different request is refused (422 ``idempotency_key_reused``); a retry that
arrives while the first is still running is told to wait (409 ``idempotency_key_in_use``). A
5xx answer is not kept, so the retry runs again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta

from seqbridge.clock import Clock
from seqbridge.context import Caller
from seqbridge.errors import Conflict, Unprocessable
from seqbridge.storage.db import Database

KEEP = timedelta(hours=24)
LOCK = timedelta(seconds=60)


@dataclass(frozen=True)
class StoredAnswer:
    status: int
    content_type: str | None
    body: bytes


def request_hash(method: str, path: str, query: bytes, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), query, body):
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()


class IdempotencyService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def begin(
        self, caller: Caller, key: str, method: str, path: str, fingerprint: str
    ) -> StoredAnswer | None:
        """Claim ``key`` for this request (None: go ahead) or return the answer kept for it.

        Raises :class:`Conflict` ``idempotency_key_in_use`` and :class:`Unprocessable`
        ``idempotency_key_reused``.
        """
        now = self.clock.now()
        row = {
            "org_id": caller.org_id,
            "key": key,
            "method": method,
            "path": path,
            "request_hash": fingerprint,
            "state": "in_progress",
            "response_status": None,
            "response_type": None,
            "response_body": None,
            "created_at": now,
            "locked_until": now + LOCK,
        }
        with self.db.transaction() as tx:
            if tx.idempotency.insert_key(row):
                return None
            existing = tx.idempotency.get_key(caller.org_id, key)
            if existing is None or tx.idempotency.take_over(
                caller.org_id, key, {**row, "expired_before": now - KEEP}, now
            ):
                return None
        if existing["request_hash"] != fingerprint:
            raise Unprocessable(
                "This Idempotency-Key was used with a different request; use a new key.",
                code="idempotency_key_reused",
            )
        if existing["state"] != "done":
            raise Conflict(
                "A request with this Idempotency-Key is still being processed; retry shortly.",
                code="idempotency_key_in_use",
                headers={"Retry-After": "1"},
            )
        return StoredAnswer(
            existing["response_status"], existing["response_type"], existing["response_body"] or b""
        )

    def finish(self, caller: Caller, key: str, status: int, content_type: str | None, body: bytes) -> None:
        """Keep the answer (a 5xx is not kept: the key is released, so a retry runs again)."""
        with self.db.transaction() as tx:
            if status >= 500:
                tx.idempotency.release(caller.org_id, key)
            else:
                tx.idempotency.finish(caller.org_id, key, status, content_type, body)

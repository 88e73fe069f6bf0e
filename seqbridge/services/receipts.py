"""The audit events of receipts, written off the request path.

The inbox answers a webhook once its receipt (the raw body, the redacted headers, its dedupe
keys) is committed; it does not write the receipt's audit event, which would put the audit
chain's lock and hash on every webhook's path. The worker writes it instead, in the transaction
that claims the delivery: ``hook:delivery:received`` for an accepted delivery (``ignored`` ones
say so), ``hook:delivery:rejected`` for one that failed verification. The event carries the
receipt's own time (``occurred_at`` is when the request arrived, not when it was audited) and
request id, and goes into the organization's chain like any other.

Exactly once: :func:`record_receipts` marks a delivery's ``receipt_audited`` and appends its
event in one transaction, and only for the deliveries that this very update marked. A process
that dies before the claim leaves the receipt unmarked (the next claim writes it); one that
dies during the claim rolls back both the mark and the event; two workers marking the same
delivery at once are serialised by its row, and the second finds it marked.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from seqbridge.audit import record
from seqbridge.services.inbox import DeliveryStatus, delivery_tag, hook_caller

if TYPE_CHECKING:
    from seqbridge.storage.tx import Tx

#: The dedupe keys an event names at most (as the inbox did when it wrote them itself).
_KEYS_SHOWN = 20


def record_receipts(tx: Tx, delivery_ids: Iterable[str]) -> int:
    """Write the receipt event of each of these deliveries whose receipt is not audited yet, and
    mark it audited, inside ``tx``. Already audited ones are left alone, so calling this again
    (or for a delivery claimed a second time) writes nothing. Returns the number of events."""
    marked = tx.deliveries.mark_receipts_audited(list(dict.fromkeys(delivery_ids)))
    if not marked:
        return 0
    accepted = [row["id"] for row in marked if row["status"] not in _WITHOUT_KEYS]
    keys = tx.deliveries.keys_of(accepted)
    for row in marked:
        caller = hook_caller(row["org_id"], row["hook"], row["request_id"])
        if row["status"] == DeliveryStatus.REJECTED:
            action = "rejected"
            data = {"hook": row["hook"], "reason": row["reject_reason"], "body_size": row["body_size"]}
        elif row["status"] == DeliveryStatus.IGNORED:
            action, data = "received", {"hook": row["hook"], "events": 0, "status": "ignored"}
        else:
            owned = keys.get(row["id"], [])
            action = "received"
            data = {"hook": row["hook"], "events": len(owned), "dedupe_keys": owned[:_KEYS_SHOWN]}
        record(tx, caller, delivery_tag(caller, action), "delivery", row["id"], data, row["received_at"])
    return len(marked)


def sweep_receipts(tx: Tx, limit: int) -> int:
    """Record the receipts of up to ``limit`` deliveries no claim will pick up (ignored and
    rejected ones; also queued ones not claimed yet), oldest first. Returns the number of events."""
    return record_receipts(tx, tx.deliveries.unaudited_receipts(limit))


_WITHOUT_KEYS = (DeliveryStatus.REJECTED, DeliveryStatus.IGNORED)

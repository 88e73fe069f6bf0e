"""REST hook subscriptions and the notifications on their way out to them.

Notifications are claimed under a lease like step tasks and deliveries (``FOR UPDATE SKIP
LOCKED`` on PostgreSQL), so several workers share the sending.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.engine import Connection

from seqbridge.storage.bulk import insert_returning
from seqbridge.storage.schema import audit_heads, hook_notifications, hook_subscriptions

#: Notifications nothing will send again.
FINISHED = ("sent", "failed", "dropped")


class SubscriptionStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    # Subscriptions -------------------------------------------------------------------------------

    def insert_subscription(self, row: dict[str, Any]) -> None:
        self.conn.execute(hook_subscriptions.insert().values(**row))

    def get_subscription(self, org_id: str, subscription_id: str) -> dict[str, Any] | None:
        row = (
            self.conn.execute(
                select(hook_subscriptions).where(
                    hook_subscriptions.c.org_id == org_id, hook_subscriptions.c.id == subscription_id
                )
            )
            .mappings()
            .first()
        )
        return dict(row) if row else None

    def list_subscriptions(
        self, org_id: str, *, event: str | None, after: tuple[datetime, str] | None, limit: int
    ) -> list[dict[str, Any]]:
        """Oldest first; ``after`` is the (created_at, id) of the last row of the previous page."""
        query = select(hook_subscriptions).where(hook_subscriptions.c.org_id == org_id)
        if event is not None:
            query = query.where(hook_subscriptions.c.event == event)
        if after is not None:
            created_at, last_id = after
            query = query.where(
                or_(
                    hook_subscriptions.c.created_at > created_at,
                    and_(hook_subscriptions.c.created_at == created_at, hook_subscriptions.c.id > last_id),
                )
            )
        query = query.order_by(hook_subscriptions.c.created_at, hook_subscriptions.c.id).limit(limit)
        return [dict(r) for r in self.conn.execute(query).mappings()]

    def delete_subscription(self, org_id: str, subscription_id: str) -> bool:
        """Delete it and (by cascade) its notifications, sent or not."""
        result = self.conn.execute(
            delete(hook_subscriptions).where(
                hook_subscriptions.c.org_id == org_id, hook_subscriptions.c.id == subscription_id
            )
        )
        return result.rowcount == 1

    def update_subscription(self, subscription_id: str, values: dict[str, Any]) -> None:
        self.conn.execute(
            update(hook_subscriptions).where(hook_subscriptions.c.id == subscription_id).values(**values)
        )

    def audit_head(self, org_id: str) -> int:
        """The organization's newest audit event id (a new subscription starts after it)."""
        return self.conn.execute(
            select(audit_heads.c.last_event_id).where(audit_heads.c.org_id == org_id)
        ).scalar_one()

    # Relaying audit events ----------------------------------------------------------------------

    def behind(self, limit: int) -> list[dict[str, Any]]:
        """Active subscriptions whose organization has audit events they have not looked at yet,
        each with that organization's newest event id as ``head``."""
        query = (
            select(
                hook_subscriptions.c.id,
                hook_subscriptions.c.org_id,
                hook_subscriptions.c.event,
                hook_subscriptions.c.audit_cursor,
                audit_heads.c.last_event_id.label("head"),
            )
            .join(audit_heads, audit_heads.c.org_id == hook_subscriptions.c.org_id)
            .where(
                hook_subscriptions.c.status == "active",
                audit_heads.c.last_event_id > hook_subscriptions.c.audit_cursor,
            )
            .order_by(hook_subscriptions.c.org_id, hook_subscriptions.c.id)
            .limit(limit)
        )
        return [dict(r) for r in self.conn.execute(query).mappings()]

    def advance(self, subscription_id: str, seen: int, cursor: int, rows: list[dict[str, Any]]) -> bool:
        """Queue ``rows`` and move the cursor from ``seen`` to ``cursor``, unless another worker
        moved it first (then nothing is written and this returns False)."""
        moved = self.conn.execute(
            update(hook_subscriptions)
            .where(
                hook_subscriptions.c.id == subscription_id,
                hook_subscriptions.c.audit_cursor == seen,
                hook_subscriptions.c.status == "active",
            )
            .values(audit_cursor=cursor)
        ).rowcount
        if moved != 1:
            return False
        if rows:
            insert_returning(self.conn, hook_notifications, rows, ("id",), skip_conflicts=True)
        return True

    # Sending ------------------------------------------------------------------------------------

    def _due(self, now: datetime):
        return or_(
            and_(hook_notifications.c.status == "pending", hook_notifications.c.next_attempt_at <= now),
            and_(hook_notifications.c.status == "sending", hook_notifications.c.lease_expires_at < now),
        )

    def any_due(self, now: datetime) -> bool:
        return (
            self.conn.execute(select(hook_notifications.c.id).where(self._due(now)).limit(1)).first()
            is not None
        )

    def claim_due(
        self, now: datetime, worker_id: str, lease_until: datetime, limit: int
    ) -> list[dict[str, Any]]:
        """Lease up to ``limit`` due notifications (and ones whose sender died), oldest first; each
        comes with its subscription's URL."""
        due = (
            select(hook_notifications.c.id)
            .where(self._due(now))
            .order_by(hook_notifications.c.next_attempt_at, hook_notifications.c.audit_event_id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        ids = list(self.conn.execute(due).scalars())
        if not ids:
            return []
        self.conn.execute(
            update(hook_notifications)
            .where(hook_notifications.c.id.in_(ids))
            .values(
                status="sending",
                lease_owner=worker_id,
                lease_expires_at=lease_until,
                attempts=hook_notifications.c.attempts + 1,
                updated_at=now,
            )
        )
        query = (
            select(hook_notifications, hook_subscriptions.c.target_url)
            .join(hook_subscriptions, hook_subscriptions.c.id == hook_notifications.c.subscription_id)
            .where(hook_notifications.c.id.in_(ids))
            .order_by(hook_notifications.c.next_attempt_at, hook_notifications.c.audit_event_id)
        )
        return [dict(r) for r in self.conn.execute(query).mappings()]

    def finish(self, notification_id: str, worker_id: str, values: dict[str, Any]) -> bool:
        """Leave the sending state; False if the lease was lost (or the subscription is gone)."""
        result = self.conn.execute(
            update(hook_notifications)
            .where(
                hook_notifications.c.id == notification_id,
                hook_notifications.c.status == "sending",
                hook_notifications.c.lease_owner == worker_id,
            )
            .values(lease_owner=None, lease_expires_at=None, **values)
        )
        return result.rowcount == 1

    def drop_pending(self, subscription_id: str, reason: str, now: datetime) -> int:
        """Stop sending a subscription's queued notifications (it was disabled)."""
        return self.conn.execute(
            update(hook_notifications)
            .where(
                hook_notifications.c.subscription_id == subscription_id,
                hook_notifications.c.status.in_(("pending", "sending")),
            )
            .values(
                status="dropped",
                last_error=reason,
                next_attempt_at=None,
                lease_owner=None,
                lease_expires_at=None,
                updated_at=now,
            )
        ).rowcount

    def lock_subscription(self, subscription_id: str) -> dict[str, Any] | None:
        """The subscription, locked for the rest of the transaction (outcomes of parallel sends
        to one subscription are applied one at a time)."""
        row = (
            self.conn.execute(
                select(hook_subscriptions).where(hook_subscriptions.c.id == subscription_id).with_for_update()
            )
            .mappings()
            .first()
        )
        return dict(row) if row else None

    def notifications(self, subscription_id: str) -> list[dict[str, Any]]:
        query = (
            select(hook_notifications)
            .where(hook_notifications.c.subscription_id == subscription_id)
            .order_by(hook_notifications.c.audit_event_id)
        )
        return [dict(r) for r in self.conn.execute(query).mappings()]

    def count_by_status(self) -> dict[str, int]:
        query = select(hook_notifications.c.status, func.count()).group_by(hook_notifications.c.status)
        return {status: int(count) for status, count in self.conn.execute(query)}

    # Retention ----------------------------------------------------------------------------------

    def old_notification_ids(self, org_id: str, cutoff: datetime, limit: int) -> list[str]:
        """Notifications that are done with (sent, failed, dropped) and unchanged since ``cutoff``."""
        query = (
            select(hook_notifications.c.id)
            .where(
                hook_notifications.c.org_id == org_id,
                hook_notifications.c.updated_at < cutoff,
                hook_notifications.c.status.in_(FINISHED),
            )
            .limit(limit)
        )
        return list(self.conn.execute(query).scalars())

    def delete_notifications(self, ids: list[str]) -> int:
        if not ids:
            return 0
        query = delete(hook_notifications).where(
            hook_notifications.c.id.in_(ids), hook_notifications.c.status.in_(FINISHED)
        )
        return self.conn.execute(query).rowcount

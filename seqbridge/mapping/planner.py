"""Planning: what a hook's rules ask for, event by event. Pure: no database, no network.

One planner serves every caller that needs to know what a webhook would do: the worker
processing a stored delivery, ``seqbridge mappings test``, the dry-run API and the console's
playground, and ``mappings diff`` over stored traffic. They differ only in where the events come
from (a live request parsed by the hook's connector, or a stored delivery); the rule evaluation
is this module's and the same for all.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from connectors.base import InboundRequest
from seqbridge.mapping.context import event_context, parse_body
from seqbridge.mapping.hooks import Hook
from seqbridge.mapping.rules import EvaluationError


@dataclass(frozen=True)
class PlannedEvent:
    """One event and what the rules ask for it: the rules that matched, in order, and their
    actions with every value computed; or the ``error`` that stopped evaluation."""

    dedupe_key: str
    kind: str
    data: Any
    rules: tuple[str, ...] = ()
    actions: tuple[dict[str, Any], ...] = ()
    error: str | None = None

    @property
    def matched(self) -> bool:
        return bool(self.rules)

    def to_dict(self) -> dict[str, Any]:
        """The form the dry-run API and mapping tests show."""
        out: dict[str, Any] = {
            "dedupe_key": self.dedupe_key,
            "kind": self.kind,
            "data": self.data,
            "rules": list(self.rules),
            "actions": list(self.actions),
        }
        if self.error is not None:
            out["error"] = self.error
        else:
            out["unmatched"] = not self.matched
        return out


def plan_events(
    hook: Hook,
    events: Iterable[dict[str, Any]],
    *,
    body: Any,
    headers: dict[str, str],
    query: dict[str, Any],
    received_at: str | None,
) -> list[PlannedEvent]:
    """Plan each stored-form event (``{"dedupe_key", "kind", "data"}``) of one request whose
    parsed body is ``body``. An event whose rules fail to evaluate gets its ``error``; the others
    are planned regardless."""
    planned = []
    for event in events:
        ctx = event_context(
            hook=hook.name, event=event, body=body, headers=headers, query=query, received_at=received_at
        )
        base = PlannedEvent(event["dedupe_key"], event["kind"], event.get("data"))
        try:
            plan = hook.plan(ctx)
        except EvaluationError as error:
            planned.append(replace(base, error=str(error)))
            continue
        planned.append(replace(base, rules=tuple(plan.rules), actions=tuple(plan.actions)))
    return planned


def plan_request(hook: Hook, request: InboundRequest, received_at: str | None = None) -> list[PlannedEvent]:
    """Parse ``request`` with the hook's connector (no signature check) and plan each event.

    Raises :class:`connectors.base.MalformedPayload` when the connector cannot read the body.
    """
    events = [
        {"dedupe_key": e.dedupe_key, "kind": e.kind, "data": e.data} for e in hook.connector.parse(request)
    ]
    return plan_events(
        hook,
        events,
        body=parse_body(request.body, request.content_type),
        headers=request.headers,
        query=request.query,
        received_at=received_at,
    )


def plan_delivery(hook: Hook, row: dict[str, Any], received_at: str | None) -> list[PlannedEvent]:
    """Plan a stored delivery (a ``deliveries`` row): its stored events, or, when the row holds
    none yet, the events its connector reads from the stored request.

    Raises :class:`connectors.base.MalformedPayload` only in the second case.
    """
    events = row.get("events")
    if events is None:
        request = InboundRequest(
            row.get("method") or "POST",
            "",
            row.get("headers") or {},
            row.get("query") or {},
            row.get("body") or b"",
            row.get("content_type") or "",
        )
        return plan_request(hook, request, received_at)
    return plan_events(
        hook,
        events,
        body=parse_body(row.get("body"), row.get("content_type")),
        headers=row.get("headers") or {},
        query=row.get("query") or {},
        received_at=received_at,
    )

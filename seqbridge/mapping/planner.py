"""Planning: what a hook's rules ask for, event by event. Pure: no database, no network.

One planner serves every caller that needs to know what a webhook would do: the worker
processing a stored delivery, ``seqbridge mappings test``, the dry-run API and the console's
playground, and ``mappings diff`` over stored traffic. They differ only in where the events come
from (a live request parsed by the hook's connector, or a stored delivery); the rule evaluation
is this module's and the same for all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from connectors.base import InboundRequest
from seqbridge.mapping.context import event_context, parse_body
from seqbridge.mapping.hooks import Hook, Memo
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
    #: The rule that planned each action (parallel to ``actions``).
    action_rules: tuple[str, ...] = ()

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
        planned.append(_plan_event(hook, event, ctx))
    return planned


def _plan_event(
    hook: Hook, event: dict[str, Any], ctx: dict[str, Any], memo: Memo | None = None
) -> PlannedEvent:
    key, kind, data = event["dedupe_key"], event["kind"], event.get("data")
    try:
        plan = hook.plan(ctx, memo)
    except EvaluationError as error:
        return PlannedEvent(key, kind, data, error=str(error))
    return PlannedEvent(
        key, kind, data, tuple(plan.rules), tuple(plan.actions), None, tuple(plan.action_rules)
    )


#: The parts of a stored request a rule may read besides its event.
REQUEST_PARTS = frozenset({"body", "headers", "query"})


def request_parts(hooks: Sequence[Hook | None]) -> frozenset[str]:
    """Which of ``body``, ``headers`` and ``query`` some rule of these hooks can read: the others
    need neither be read from the database nor parsed to plan their events."""
    parts: set[str] = set()
    for hook in hooks:
        reads = hook.reads if hook is not None else frozenset()
        if reads is None:
            return REQUEST_PARTS
        parts |= reads & REQUEST_PARTS
    return frozenset(parts)


def plan_request(hook: Hook, request: InboundRequest, received_at: str | None = None) -> list[PlannedEvent]:
    """Parse ``request`` with the hook's connector (no signature check) and plan each event.

    Raises :class:`connectors.base.MalformedPayload` when the connector cannot read the body.
    """
    events = [
        {"dedupe_key": e.dedupe_key, "kind": e.kind, "data": e.data} for e in hook.connector.parse(request)
    ]
    reads = hook.reads
    # The connector has read the body once already; no rule reading it, it is not parsed again.
    body = parse_body(request.body, request.content_type) if reads is None or "body" in reads else None
    return plan_events(
        hook,
        events,
        body=body,
        headers=request.headers,
        query=request.query,
        received_at=received_at,
    )


def stored_request(row: dict[str, Any]) -> InboundRequest:
    """The request a stored delivery (a ``deliveries`` row) was, as far as it was kept (the
    headers and query redacted, no URL)."""
    return InboundRequest(
        row.get("method") or "POST",
        "",
        row.get("headers") or {},
        row.get("query") or {},
        row.get("body") or b"",
        row.get("content_type") or "",
    )


def delivery_events(hook: Hook, row: dict[str, Any]) -> list[dict[str, Any]]:
    """A stored delivery's events in stored form: as stored, or, when the row holds none (the
    inbox leaves them to be read later), as its connector reads them from the stored request.

    Raises :class:`connectors.base.MalformedPayload` only in the second case.
    """
    events = row.get("events")
    if events is not None:
        return events
    return [
        {"dedupe_key": e.dedupe_key, "kind": e.kind, "data": e.data}
        for e in hook.connector.parse(stored_request(row))
    ]


def plan_delivery(hook: Hook, row: dict[str, Any], received_at: str | None) -> list[PlannedEvent]:
    """Plan a stored delivery (a ``deliveries`` row): its stored events, or, when the row holds
    none yet, the events its connector reads from the stored request.

    Raises :class:`connectors.base.MalformedPayload` only in the second case.
    """
    events = row.get("events")
    if events is None:
        return plan_request(hook, stored_request(row), received_at)
    return plan_events(
        hook,
        events,
        body=parse_body(row.get("body"), row.get("content_type")),
        headers=row.get("headers") or {},
        query=row.get("query") or {},
        received_at=received_at,
    )


def plan_versions(
    hooks: Sequence[Hook | None],
    row: dict[str, Any],
    received_at: str | None,
    parts: frozenset[str] | None = None,
) -> list[list[PlannedEvent] | None]:
    """Plan a stored delivery with several versions of one hook (a mapping diff): one list of
    planned events per version, None for a version that does not have the hook.

    The request is read once (its body only if a version can read it: ``parts``, by default
    :func:`request_parts` of ``hooks``, which also says what ``row`` must hold) and each event's
    context built once; a rule or action the versions hold unchanged (the same key) is evaluated
    once per event. A row whose events are not stored is planned by :func:`plan_delivery` for each
    version (each version's connector reads it).

    Raises :class:`connectors.base.MalformedPayload` only for a row without stored events.
    """
    events = row.get("events")
    if events is None:
        return [None if hook is None else plan_delivery(hook, row, received_at) for hook in hooks]
    names = {hook.name for hook in hooks if hook is not None}
    if len(names) > 1:  # the context names the hook: versions of different hooks share nothing
        raise ValueError(f"plan_versions plans versions of one hook, not of {sorted(names)}")
    name = names.pop() if names else ""
    parts = request_parts(hooks) if parts is None else parts
    # A body no rule can read is not parsed (strict JSON parsing costs more than planning).
    body = parse_body(row.get("body"), row.get("content_type")) if "body" in parts else None
    headers, query = row.get("headers") or {}, row.get("query") or {}
    planned: list[list[PlannedEvent] | None] = [None if hook is None else [] for hook in hooks]
    for event in events:
        ctx = event_context(
            hook=name, event=event, body=body, headers=headers, query=query, received_at=received_at
        )
        memo: Memo = {}
        for hook, out in zip(hooks, planned, strict=True):
            if out is not None:
                out.append(_plan_event(hook, event, ctx, memo))
    return planned

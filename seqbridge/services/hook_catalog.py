"""The hooks an organization has, as an operator sees them: where senders post, which connector,
whether the mapping is valid (problems at file:line:col), the rate limit, recent traffic; and the
playground, which runs the dry-run on a pasted body or on a stored delivery."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from seqbridge.clock import Clock
from seqbridge.context import Caller
from seqbridge.errors import NotFound
from seqbridge.mapping.registry import BrokenHook, UnknownHook
from seqbridge.storage.db import Database


class HookCatalogService:
    def __init__(self, db: Database, clock: Clock, deliveries) -> None:
        self.db = db
        self.clock = clock
        self.deliveries = deliveries  # DeliveryService: mapping statuses and the dry-run

    def hooks(self, caller: Caller) -> list[dict[str, Any]]:
        """Every hook of the organization with its status, problems, rate limit and the last
        24 hours' deliveries by status."""
        since = self.clock.now() - timedelta(days=1)
        statuses = self.deliveries.mapping_statuses(caller)
        with self.db.transaction(write=False) as tx:
            traffic = tx.delivery_stats.counts_by_hook(caller.org_id, since, [s["name"] for s in statuses])
        out = []
        for status in statuses:
            hook = self._hook(status["name"])
            out.append(
                {
                    **status,
                    "connector": status.get("connector") or (hook.connector_name if hook else None),
                    "rate_limit": {"per_second": hook.rate_per_second, "burst": hook.rate_burst}
                    if hook and hook.rate_per_second
                    else None,
                    "max_body_bytes": hook.max_body_bytes if hook else None,
                    "traffic": traffic.get(status["name"], {}),
                    "traffic_total": sum(traffic.get(status["name"], {}).values()),
                }
            )
        return out

    def hook(self, caller: Caller, name: str) -> dict[str, Any]:
        """One hook of the organization (as :meth:`hooks`). Raises :class:`NotFound`."""
        for hook in self.hooks(caller):
            if hook["name"] == name:
                return hook
        raise NotFound(f"No hook named {name!r}.", code="hook_not_found")

    def _hook(self, name: str):
        try:
            return self.deliveries.registry.get(name)
        except (UnknownHook, BrokenHook):
            return None

    def try_payload(self, caller: Caller, hook: str, spec: dict[str, Any]) -> dict[str, Any]:
        """The dry-run of a pasted request (body, content_type, headers, query): events, matched
        rules, planned actions; nothing is stored or executed."""
        return self.deliveries.dry_run(caller, hook, spec)

    def try_delivery(
        self, caller: Caller, hook: str, delivery_id: str
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The dry-run of a stored delivery's request against the hook's current mapping; returns
        (the spec that was run, the result). Raises :class:`NotFound`."""
        stored = self.deliveries.get_delivery(caller, delivery_id)
        request = stored["request"]
        if request["body"] is None:
            raise NotFound("That delivery kept no body (it was rejected): paste one instead.", code="no_body")
        spec = {
            "body": request["body"],
            "content_type": request["content_type"] or "application/json",
            "headers": request["headers"] or {},
            "query": {
                k: (v[0] if isinstance(v, list) and v else v) for k, v in (request["query"] or {}).items()
            },
        }
        return spec, self.deliveries.dry_run(caller, hook, spec)

"""``mappings diff``: what a mapping change would have done to the traffic actually received.

Both versions are compiled, the affected hooks' stored deliveries (processed, failed and dead) in
the window are read page by page, newest first, and every event is planned with both versions
(:func:`seqbridge.mapping.planner.plan_versions`), then compared (:mod:`seqbridge.mapping.diff`).
Nothing is executed, no target is called, nothing is written. An organization's diff reads only
its own deliveries. The CLI and the API are adapters over :meth:`MappingDiffService.compare`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from connectors.base import MalformedPayload
from seqbridge.clock import Clock
from seqbridge.context import Caller
from seqbridge.errors import BadRequest, NotFound, Unprocessable
from seqbridge.mapping.diff import HookDiff, LoadedVersion, report, settings_changes
from seqbridge.mapping.hooks import Hook
from seqbridge.mapping.planner import delivery_events, plan_versions, request_parts
from seqbridge.mapping.registry import HookRegistry
from seqbridge.mapping.rules import union
from seqbridge.mapping.source import Problem
from seqbridge.mapping.sources import MappingSet, declared_hooks, environment_in_rules, scrubbed, submitted
from seqbridge.services.common import format_time, parse_moment
from seqbridge.services.mapping_versions import MappingVersionService
from seqbridge.storage.db import Database
from seqbridge.storage.deliveries import stored_time

#: The deliveries a diff replays: those that were mapped (queued ones will be, with the new version).
STATUSES = ("processed", "failed", "dead")
#: Deliveries read per query.
PAGE = 1000
#: The window when none is given, and the API's default limit (per hook; openapi.yaml caps it).
DEFAULT_SINCE = "7d"
API_LIMIT = 10_000
_SIDES = ("before", "after")


class MappingInvalid(Unprocessable):
    """The mapping does not validate."""

    code = "mapping_invalid"

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(
            f"The mapping has {len(problems)} problem(s); nothing was compared.",
            details={"problems": [p.to_api() for p in problems]},
        )
        self.problems = problems


@dataclass(frozen=True)
class Window:
    """Which stored deliveries a diff reads: received since ``since``, at most ``limit`` per hook
    (the newest)."""

    since: datetime | None
    limit: int

    def describe(self) -> dict[str, Any]:
        return {"since": format_time(self.since), "limit": self.limit, "statuses": list(STATUSES)}


@dataclass(frozen=True)
class Scope:
    """Whose deliveries a diff reads. ``org_id`` set: one organization's only (the API: hooks that
    name another organization are not shown). Otherwise each hook's own organization (the CLI)."""

    org_id: str | None = None
    org_name: str | None = None


class MappingDiffService:
    """Mapping diffs over stored deliveries, for the CLI and the API."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        settings: Mapping[str, Any],
        versions: MappingVersionService,
        registry: Callable[[], HookRegistry],
    ) -> None:
        self.db = db
        self.clock = clock
        self.settings = settings
        self.versions = versions
        self.registry = registry
        self._org_ids: dict[str, str | None] = {}

    # The API ---------------------------------------------------------------------------------

    def diff_submitted(
        self,
        caller: Caller,
        text: str,
        *,
        file: str | None = None,
        hook: str | None = None,
        since: str | None = None,
        limit: int = API_LIMIT,
    ) -> dict[str, Any]:
        """The running mappings against the running mappings with one file (``file``, or the one
        that holds ``hook`` or the hooks ``text`` declares) replaced by ``text``; ``since`` as the
        CLI takes it (``7d``, ``12h``, a date; default 7 days).

        Only hooks of the caller's organization are compared. Raises :class:`MappingInvalid`
        (the submitted file's problems), :class:`NotFound` ``hook_not_found`` and
        :class:`BadRequest` ``invalid_since``."""
        with self.db.transaction(write=False) as tx:
            org = tx.orgs.get_org(caller.org_id)
        window = Window(self._since(since), limit)
        running = self.versions.running(self.registry())
        name = file or self._file_for(running, hook, text)
        after = submitted(running, name, text)
        environ = self.registry().environ
        problems = environment_in_rules(name, text, environ)
        return self.compare(
            running,
            after,
            window=window,
            hook=hook,
            changed={name},
            environ=environ,
            scope=Scope(caller.org_id, org["name"] if org else ""),
            extra_problems=problems,
            scrub_environment=True,
        )

    def _since(self, text: str | None) -> datetime:
        try:
            moment = parse_moment(text or DEFAULT_SINCE)
        except ValueError as error:
            raise BadRequest(str(error), code="invalid_since") from None
        return self.clock.now() - moment if isinstance(moment, timedelta) else moment

    def _file_for(self, running: MappingSet, hook: str | None, text: str) -> str:
        """The running file a submitted text replaces: the one that holds ``hook``, or one of the
        hooks the text declares."""
        wanted = [hook] if hook else declared_hooks(text)
        for f in running.files:
            if any(h in (f.hooks or {}) for h in wanted):
                return f.name
        return "mapping.yaml"

    # Both ------------------------------------------------------------------------------------

    def compare(
        self,
        before: MappingSet,
        after: MappingSet,
        *,
        window: Window,
        hook: str | None = None,
        changed: set[str] | None = None,
        environ: Mapping[str, str] | None = None,
        scope: Scope | None = None,
        extra_problems: list[Problem] | None = None,
        scrub_environment: bool = False,
    ) -> dict[str, Any]:
        """Plan the stored deliveries of the hooks in the ``changed`` files (every file when
        None) with both versions and compare. ``hook`` narrows to one hook.

        Raises :class:`MappingInvalid` when ``after`` does not validate (its problems exactly as
        ``mappings validate`` prints them), :class:`NotFound` ``hook_not_found`` when ``hook`` is
        in neither version (or, with an organization scope, not that organization's)."""
        environ = os.environ if environ is None else environ
        scope = scope or Scope()
        allow_private = bool(self.settings.get("ALLOW_PRIVATE_TARGETS"))
        after_loaded = after.load(environ, allow_private)
        problems = [*after_loaded.problems(), *(extra_problems or [])]
        if changed is not None:  # only the changed files' problems: the others are running as they are
            problems = [p for p in problems if os.path.basename(p.file) in changed or p.file in changed]
        if problems:
            problems = sorted(set(problems))
            raise MappingInvalid(scrubbed(problems, after, environ) if scrub_environment else problems)
        old = LoadedVersion.of(before, before.load(environ, allow_private))
        new = LoadedVersion.of(after, after_loaded)
        names = sorted(
            {n for side in (old, new) for n, f in side.files.items() if changed is None or f in changed}
        )
        if scope.org_id is not None:
            names = [n for n in names if self._ours(n, old, new, scope)]
        if hook is not None:
            if hook not in names:
                raise NotFound(f"No hook named {hook!r}.", code="hook_not_found")
            names = [hook]
        elif scope.org_id is not None and not names:
            raise NotFound("No hook of this organization is in the mapping.", code="hook_not_found")
        hooks = [self._diff_hook(n, old, new, window, scope) for n in names]
        return report(old, new, window.describe(), hooks)

    @staticmethod
    def _ours(name: str, old: LoadedVersion, new: LoadedVersion, scope: Scope) -> bool:
        orgs = {side.organizations[name] for side in (old, new) if name in side.organizations}
        return orgs == {scope.org_name}

    def _diff_hook(
        self, name: str, old: LoadedVersion, new: LoadedVersion, window: Window, scope: Scope
    ) -> dict[str, Any]:
        before, after = old.hooks.get(name), new.hooks.get(name)
        old_org, new_org = old.organizations.get(name), new.organizations.get(name)
        organization = old_org or new_org or ""
        entry: dict[str, Any] = {
            "hook": name,
            "change": "added" if name not in old.files else "removed" if after is None else "changed",
            "organization": organization,
            "files": {"before": old.files.get(name), "after": new.files.get(name)},
            "settings": settings_changes(before, after, old_org, new_org),
            "notes": [],
        }
        diff = HookDiff(name)
        if name in old.broken:  # e.g. the server ran it, but its version does not compile here
            problems = "; ".join(str(p) for p in old.broken[name][:3])
            entry.update(change="skipped", truncated=False, settings=[], **diff.to_dict())
            entry["notes"].append(f"{old.set.label}: this hook does not compile here ({problems})")
            return entry
        if old.set.source == "running" and old_org and new_org and old_org != new_org:
            entry["notes"].append(
                f"the server runs this hook for organization {old_org!r}; the new version names {new_org!r} "
                "here (is this the server's environment?)"
            )
        identical = (
            before is not None
            and after is not None
            and old.sha_of(name) == new.sha_of(name)
            and old.targets_signature() == new.targets_signature()
        )
        if identical:
            entry.update(change="identical", truncated=False, settings=[], **diff.to_dict())
            entry["notes"].append("the source is identical in both versions: not replayed")
            return entry
        org_id = scope.org_id if scope.org_id is not None else self._org_id(organization)
        truncated = False
        if org_id is None:
            entry["notes"].append(f"organization {organization!r} does not exist: no stored deliveries")
        else:
            truncated = self._replay(diff, org_id, name, before, after, window)
        if truncated:
            entry["notes"].append(f"only the newest {window.limit} deliveries were compared")
        entry.update(truncated=truncated, **diff.to_dict())
        if entry["change"] == "changed" and not diff.changed and not entry["settings"]:
            entry["change"] = "unchanged"
        return entry

    def _replay(
        self, diff: HookDiff, org_id: str, name: str, before: Hook | None, after: Hook | None, window: Window
    ) -> bool:
        """Plan every delivery in the window with both versions; True if ``window.limit`` cut it."""
        versions = [before, after]
        parts = request_parts(versions)  # what neither version reads is not parsed
        reads = union([hook.reads if hook is not None else frozenset() for hook in versions])
        stamped = reads is None or "received_at" in reads
        cursor: tuple[datetime, str] | None = None
        read = 0
        while read < window.limit:
            size = min(PAGE, window.limit - read)
            rows = self._page(org_id, name, window, cursor, size, parts)
            for row in rows:
                received_at = format_time(stored_time(row["received_at"])) if stamped else None
                if row["events"] is None:
                    self._replay_unparsed(diff, row, versions, received_at, parts)
                else:
                    planned = plan_versions(versions, row, received_at, parts)
                    diff.add_delivery(row["id"], planned[0], planned[1])
            read += len(rows)
            if len(rows) < size:
                return False
            cursor = (rows[-1]["received_at"], rows[-1]["id"])
        return bool(self._page(org_id, name, window, cursor, 1, frozenset()))  # more than the limit let in?

    def _page(
        self, org_id: str, hook: str, window: Window, cursor: tuple[datetime, str] | None, size: int, parts
    ) -> list[dict[str, Any]]:
        with self.db.transaction(write=False) as tx:
            return tx.deliveries.requests_to_plan(
                org_id, hook, statuses=STATUSES, since=window.since, before=cursor, limit=size, parts=parts
            )

    @staticmethod
    def _replay_unparsed(
        diff: HookDiff, row: dict[str, Any], versions: list[Hook | None], received_at: str | None, parts
    ) -> None:
        """A delivery whose events are not stored: the connector reads the request, once for the
        versions whose source settings are the same, then they are planned as usual."""
        groups: dict[str, list[int]] = {}
        for index, hook in enumerate(versions):
            if hook is not None:
                groups.setdefault(hook.source_key, []).append(index)
        planned: list[Any] = [None] * len(versions)
        for indexes in groups.values():
            try:
                events = delivery_events(versions[indexes[0]], row)
            except MalformedPayload as error:
                side = "both" if len(indexes) == len(versions) else _SIDES[indexes[0]]
                diff.add_unreadable(row["id"], side, f"the connector cannot read the body: {error}")
                return
            group = [hook if index in indexes else None for index, hook in enumerate(versions)]
            out = plan_versions(group, {**row, "events": events}, received_at, parts)
            for index in indexes:
                planned[index] = out[index]
        diff.add_delivery(row["id"], planned[0], planned[1])

    def _org_id(self, name: str) -> str | None:
        if name not in self._org_ids:
            with self.db.transaction(write=False) as tx:
                org = tx.orgs.get_org_by_name(name)
            self._org_ids[name] = org["id"] if org else None
        return self._org_ids[name]

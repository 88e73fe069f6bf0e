"""``mappings diff``: what a mapping change would have done to the traffic actually received.

Both versions are compiled, the affected hooks' stored deliveries (processed, failed and dead) in
the window are read page by page, newest first, and every event is planned with both versions
(:func:`seqbridge.mapping.planner.plan_versions`), then compared (:mod:`seqbridge.mapping.diff`).
Nothing is executed, no target is called, nothing is written. An organization's diff reads only
its own deliveries. The CLI and the API are adapters over :meth:`MappingDiffService.compare`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from connectors.base import MalformedPayload
from seqbridge.clock import Clock
from seqbridge.context import Caller
from seqbridge.errors import BadRequest, NotFound, Unprocessable
from seqbridge.mapping.diff import HookDiff
from seqbridge.mapping.hooks import Hook
from seqbridge.mapping.planner import delivery_events, plan_versions, request_parts
from seqbridge.mapping.registry import HookRegistry, Loaded
from seqbridge.mapping.rules import union
from seqbridge.mapping.source import Problem, ProblemsFound, read_document
from seqbridge.mapping.sources import MappingSet, submitted
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
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


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


@dataclass
class _Side:
    """One version, loaded: its hooks, the file each came from, and the organization each runs for."""

    set: MappingSet
    loaded: Loaded
    hooks: dict[str, Hook]
    files: dict[str, str]
    organizations: dict[str, str]
    #: Hooks of this version that do not compile here, with their problems.
    broken: dict[str, list[Problem]]

    @classmethod
    def of(cls, mapping_set: MappingSet, loaded: Loaded) -> _Side:
        recorded = {f.path: f.hooks for f in mapping_set.files if f.hooks is not None}
        file_names = {f.path: f.name for f in mapping_set.files}
        hooks: dict[str, Hook] = {}
        files: dict[str, str] = {}
        organizations: dict[str, str] = {}
        broken: dict[str, list[Problem]] = {}
        for result in loaded.results:
            live = recorded.get(result.path)
            for name in [*result.hooks, *result.broken]:
                if live is not None and name not in live:
                    continue  # a hook the server did not run from this version
                files[name] = file_names.get(result.path, os.path.basename(result.path))
                organizations[name] = live[name] if live is not None else result.organizations.get(name, "")
                if name in loaded.duplicates:
                    broken[name] = [loaded.duplicates[name]]
                elif name in result.hooks:
                    hooks[name] = result.hooks[name]
                else:
                    broken[name] = result.broken[name]
        return cls(mapping_set, loaded, hooks, files, organizations, broken)

    def sha_of(self, name: str) -> str | None:
        """The SHA-256 of the file the hook comes from (as recorded, for the running version)."""
        path = next((f.path for f in self.set.files if f.name == self.files.get(name)), None)
        return self.set.sha_of(path, self.loaded) if path is not None else None

    def targets_signature(self) -> tuple[str, ...]:
        """The files that declare shared targets: a hook compiles against them too."""
        return tuple(
            sorted(str(self.set.sha_of(r.path, self.loaded)) for r in self.loaded.results if r.targets)
        )


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
        problems = _environment_in_rules(name, text, environ)
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
        wanted = [hook] if hook else _declared_hooks(text)
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
            raise MappingInvalid(_scrubbed(problems, after, environ) if scrub_environment else problems)
        old = _Side.of(before, before.load(environ, allow_private))
        new = _Side.of(after, after_loaded)
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
        return _report(old, new, window, hooks)

    @staticmethod
    def _ours(name: str, old: _Side, new: _Side, scope: Scope) -> bool:
        orgs = {side.organizations[name] for side in (old, new) if name in side.organizations}
        return orgs == {scope.org_name}

    def _diff_hook(self, name: str, old: _Side, new: _Side, window: Window, scope: Scope) -> dict[str, Any]:
        before, after = old.hooks.get(name), new.hooks.get(name)
        old_org, new_org = old.organizations.get(name), new.organizations.get(name)
        organization = old_org or new_org or ""
        entry: dict[str, Any] = {
            "hook": name,
            "change": "added" if name not in old.files else "removed" if after is None else "changed",
            "organization": organization,
            "files": {"before": old.files.get(name), "after": new.files.get(name)},
            "settings": _settings_changes(before, after, old_org, new_org),
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


# Pieces of the report ---------------------------------------------------------------------------


def _report(old: _Side, new: _Side, window: Window, hooks: list[dict[str, Any]]) -> dict[str, Any]:
    keys = (
        "deliveries",
        "events",
        "changed_events",
        "different_rules",
        "actions_added",
        "actions_removed",
        "actions_changed",
        "new_errors",
        "fixed_errors",
        "unreadable",
    )
    summary: dict[str, Any] = {k: sum(h[k] for h in hooks) for k in keys}
    summary["hooks"] = len(hooks)
    summary["hooks_changed"] = sum(1 for h in hooks if h["change"] in ("changed", "added", "removed"))
    summary["hooks_skipped"] = sum(1 for h in hooks if h["change"] == "skipped")
    return {
        "changed": summary["hooks_changed"] > 0,
        "complete": summary["hooks_skipped"] == 0,
        "before": old.set.describe(old.loaded),
        "after": new.set.describe(new.loaded),
        "window": window.describe(),
        "summary": summary,
        "hooks": hooks,
    }


def _settings(hook: Hook, organization: str | None) -> dict[str, Any]:
    return {
        "organization": organization or hook.organization,
        "connector": hook.connector_name,
        "respond": hook.respond,
        "respond_timeout_seconds": hook.respond_timeout_seconds,
        "on_unmatched": hook.on_unmatched,
        "rate_limit": [hook.rate_per_second, hook.rate_burst],
        "max_body_bytes": hook.max_body_bytes,
        "targets": {name: target.type for name, target in sorted(hook.targets.items())},
    }


def _settings_changes(
    before: Hook | None, after: Hook | None, old_org: str | None, new_org: str | None
) -> list[dict[str, Any]]:
    """The hook's settings that differ (what happens to an unmatched event, whose organization…)."""
    if before is None or after is None:
        return []
    old, new = _settings(before, old_org), _settings(after, new_org)
    return [{"setting": k, "before": old[k], "after": new[k]} for k in old if old[k] != new[k]]


def _declared_hooks(text: str) -> list[str]:
    from seqbridge.mapping.registry import guess_hook_names

    return guess_hook_names("submitted", text)


def _environment_in_rules(name: str, text: str, environ: Mapping[str, str]) -> list[Problem]:
    """A mapping sent to the API may read the environment in its settings (organization, source,
    targets), never in its rules: the diff shows what the rules plan, and would show the value."""
    try:
        doc = read_document(name, text, environ)
    except ProblemsFound:
        return []  # the loader reports these
    settings = {"organization", "source", "targets"}
    problems = []
    for path in sorted(doc.from_env, key=str):
        if (path and path[0] == "targets") or (len(path) >= 3 and path[0] == "hooks" and path[2] in settings):
            continue
        problems.append(
            doc.at(
                path,
                "a mapping sent to the API reads the environment (${...}) only in "
                "organization, source and targets",
            )
        )
    return problems


def _scrubbed(problems: list[Problem], after: MappingSet, environ: Mapping[str, str]) -> list[Problem]:
    """The problems, with any value the files read from the environment blanked out of messages."""
    values = set()
    for f in after.files:
        for name in _ENV_REFERENCE.findall(f.text or ""):
            value = environ.get(name)
            if value and len(value) >= 4:
                values.add(value)
    if not values:
        return problems
    out = []
    for problem in problems:
        message = problem.message
        for value in values:
            message = message.replace(value, "[REDACTED]")
        out.append(Problem(problem.file, problem.line, problem.col, message))
    return out

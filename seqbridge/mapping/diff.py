"""What a mapping change does to traffic: the same stored events planned with two versions of a
hook, compared. Pure: plans in, a report out; no database, no network.

For one hook, :class:`HookDiff` takes each delivery's planned events under the version "before"
and the version "after" (:func:`seqbridge.mapping.planner.plan_versions`) and keeps:

- how many events were compared, and how many changed at all;
- events that now match different rules, grouped by (rules before, rules after);
- planned actions that appear, disappear or change, grouped by rule, action and target (and, for
  a change, the fields that changed), each group with its count and up to three examples;
- events that now fail to evaluate, grouped by error (and those that no longer fail).

:class:`LoadedVersion` is one side compiled, and :func:`report` puts the per-hook results
together. An action that is in both plans with the same values is unchanged wherever it sits. The others are
paired by action and target, in order: a pair is a change (the fields that differ), the rest
appear or disappear. Every value shown is redacted as the deliveries API redacts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from seqbridge.audit import redact
from seqbridge.mapping.hooks import Hook
from seqbridge.mapping.planner import PlannedEvent
from seqbridge.mapping.registry import Loaded
from seqbridge.mapping.source import Problem
from seqbridge.mapping.sources import MappingSet

#: Examples kept per group.
MAX_EXAMPLES = 3
#: Distinct error messages kept per hook; the rest are counted under one "other errors" group.
MAX_ERROR_GROUPS = 20
OTHER_ERRORS = "(other errors)"

#: What an event of a hook that a version does not have plans to: nothing.
_NOTHING = PlannedEvent("", "", None)
_ABSENT = object()


@dataclass
class Group:
    """Events (or actions) that changed the same way: how many, a few examples, and a sample of
    the change taken from the first one."""

    count: int = 0
    examples: list[dict[str, str]] = field(default_factory=list)
    sample: Any = None

    def add(self, delivery_id: str, event: str) -> bool:
        """Count one more; True if it is the first (the caller then sets the sample)."""
        self.count += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append({"delivery_id": delivery_id, "event": event})
        return self.count == 1


@dataclass
class HookDiff:
    """The comparison of one hook's stored events planned with two versions of it."""

    hook: str
    deliveries: int = 0
    events: int = 0
    changed_events: int = 0
    #: (rules before, rules after) → events.
    rules: dict[tuple[tuple[str, ...], tuple[str, ...]], Group] = field(default_factory=dict)
    #: (change, rule before, rule after, action, target, changed fields) → actions.
    actions: dict[tuple[Any, ...], Group] = field(default_factory=dict)
    #: error after → events that now fail; error before → events that no longer fail.
    errors: dict[str, Group] = field(default_factory=dict)
    fixed: dict[str, Group] = field(default_factory=dict)
    #: Deliveries whose request the connector cannot read (events not stored), by version.
    unreadable: dict[str, Group] = field(default_factory=dict)

    def add_delivery(
        self,
        delivery_id: str,
        before: list[PlannedEvent] | None,
        after: list[PlannedEvent] | None,
    ) -> None:
        """Compare one delivery's events. ``None`` for a version that does not have the hook."""
        self.deliveries += 1
        before = before if before is not None else []
        after = after if after is not None else []
        if len(before) == len(after):
            pairs = zip(before, after, strict=True)
        else:  # the versions' connectors read the request differently (its events are not stored)
            size = max(len(before), len(after))
            pairs = zip(_padded(before, size), _padded(after, size), strict=True)
        for old, new in pairs:
            self.events += 1
            if old.rules == new.rules and old.actions == new.actions and old.error == new.error:
                continue  # by far the most common case: nothing to look at
            self._compare(delivery_id, old, new)

    def add_unreadable(self, delivery_id: str, version: str, error: str) -> None:
        """A delivery one version's connector cannot read (``version``: before or after)."""
        self.deliveries += 1
        self.changed_events += 1
        group = self.unreadable.setdefault(version, Group())
        if group.add(delivery_id, ""):
            group.sample = _text(error)

    def _compare(self, delivery_id: str, old: PlannedEvent, new: PlannedEvent) -> None:
        self.changed_events += 1
        event = new.dedupe_key or old.dedupe_key
        if new.error is not None or old.error is not None:
            if new.error is not None and new.error != old.error:
                self._error(self.errors, new.error, delivery_id, event)
            elif old.error is not None and new.error is None:
                self._error(self.fixed, old.error, delivery_id, event)
            return  # an event that fails on either side has no actions to compare
        if old.rules != new.rules:
            self.rules.setdefault((old.rules, new.rules), Group()).add(delivery_id, event)
        removed, changed, added = pair_actions(
            list(zip(old.action_rules, old.actions, strict=True)),
            list(zip(new.action_rules, new.actions, strict=True)),
        )
        for rule, action in removed:
            self._action(("removed", rule, rule, action, ()), delivery_id, event, lambda a=action: redact(a))
        for rule, action in added:
            self._action(("added", rule, rule, action, ()), delivery_id, event, lambda a=action: redact(a))
        for (old_rule, old_action), (new_rule, new_action) in changed:
            fields = tuple(path for path, _, _ in field_changes(old_action, new_action))
            self._action(
                ("changed", old_rule, new_rule, new_action, fields),
                delivery_id,
                event,
                lambda o=old_action, n=new_action: _shown_changes(o, n),
            )

    def _action(self, key: tuple[Any, ...], delivery_id: str, event: str, sample) -> None:
        change, old_rule, new_rule, action, fields = key
        group_key = (change, old_rule, new_rule, action["action"], action.get("target", "local"), fields)
        group = self.actions.setdefault(group_key, Group())
        if group.add(delivery_id, event):
            group.sample = sample()

    @staticmethod
    def _error(groups: dict[str, Group], error: str, delivery_id: str, event: str) -> None:
        key = error if error in groups or len(groups) < MAX_ERROR_GROUPS else OTHER_ERRORS
        groups.setdefault(key, Group()).add(delivery_id, event)

    # The report ------------------------------------------------------------------------------

    @property
    def changed(self) -> bool:
        return self.changed_events > 0

    def summary(self) -> dict[str, int]:
        """The counts for this hook (the report's per-hook and total figures)."""
        totals = {"added": 0, "removed": 0, "changed": 0}
        for key, group in self.actions.items():
            totals[key[0]] += group.count
        return {
            "deliveries": self.deliveries,
            "events": self.events,
            "changed_events": self.changed_events,
            "different_rules": sum(g.count for g in self.rules.values()),
            "actions_added": totals["added"],
            "actions_removed": totals["removed"],
            "actions_changed": totals["changed"],
            "new_errors": sum(g.count for g in self.errors.values()),
            "fixed_errors": sum(g.count for g in self.fixed.values()),
            "unreadable": sum(g.count for g in self.unreadable.values()),
        }

    def to_dict(self) -> dict[str, Any]:
        """The groups, largest first (ties in a fixed order, so equal inputs give equal reports)."""
        rules = [
            {"before": list(old), "after": list(new), "count": g.count, "examples": g.examples}
            for (old, new), g in _largest_first(self.rules)
        ]
        actions = []
        for (change, old_rule, new_rule, action, target, _fields), g in _largest_first(self.actions):
            entry: dict[str, Any] = {"change": change, "rule": new_rule}
            if old_rule != new_rule:
                entry["rule_before"] = old_rule
            entry.update(action=action, target=target, count=g.count, examples=g.examples)
            entry["fields" if change == "changed" else "sample"] = g.sample
            actions.append(entry)
        return {
            **self.summary(),
            "rules": rules,
            "actions": actions,
            "errors": _errors(self.errors),
            "fixed": _errors(self.fixed),
            "unreadable_deliveries": [
                {"version": version, "error": g.sample, "count": g.count, "examples": g.examples}
                for version, g in sorted(self.unreadable.items())
            ],
        }


def pair_actions(
    before: list[tuple[str, dict[str, Any]]], after: list[tuple[str, dict[str, Any]]]
) -> tuple[list[tuple[str, dict]], list[tuple[tuple[str, dict], tuple[str, dict]]], list[tuple[str, dict]]]:
    """(removed, changed, added) between two events' (rule, action) lists. An action with the
    same values on both sides is unchanged wherever it sits; the others pair up by action and
    target, in order."""
    remaining = list(after)
    unmatched = []
    for rule, action in before:
        for index, (_, other) in enumerate(remaining):
            if other == action:
                del remaining[index]
                break
        else:
            unmatched.append((rule, action))
    removed, changed = [], []
    for rule, action in unmatched:
        for index, (other_rule, other) in enumerate(remaining):
            if other["action"] == action["action"] and other.get("target") == action.get("target"):
                changed.append(((rule, action), (other_rule, other)))
                del remaining[index]
                break
        else:
            removed.append((rule, action))
    return removed, changed, remaining


def field_changes(before: Any, after: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted path, value before, value after) of every field that differs; ``_ABSENT`` stands
    for a field one side does not have. Objects are compared field by field, anything else whole."""
    if not (isinstance(before, dict) and isinstance(after, dict)):
        return [] if before == after else [(prefix or "(value)", before, after)]
    out = []
    for key in [*before, *(k for k in after if k not in before)]:
        old, new = before.get(key, _ABSENT), after.get(key, _ABSENT)
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(old, dict) and isinstance(new, dict):
            out.extend(field_changes(old, new, path))
        elif old != new:
            out.append((path, old, new))
    return out


def _shown_changes(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    shown = []
    for path, old, new in field_changes(redact(before), redact(after)):
        entry: dict[str, Any] = {"field": path}
        if old is not _ABSENT:
            entry["before"] = old
        if new is not _ABSENT:
            entry["after"] = new
        shown.append(entry)
    return shown


def _errors(groups: dict[str, Group]) -> list[dict[str, Any]]:
    return [
        {"error": _text(error), "count": g.count, "examples": g.examples}
        for error, g in _largest_first(groups)
    ]


def _text(message: str) -> str:
    redacted = redact(message)
    return redacted if isinstance(redacted, str) else message


def _largest_first(groups: dict) -> list[tuple[Any, Group]]:
    return sorted(groups.items(), key=lambda item: (-item[1].count, repr(item[0])))


def _padded(events: list[PlannedEvent], size: int) -> list[PlannedEvent]:
    return events + [_NOTHING] * (size - len(events))


# A version and the report -------------------------------------------------------------------


@dataclass
class LoadedVersion:
    """One version, loaded: its hooks, the file each came from, and the organization each runs for."""

    set: MappingSet
    loaded: Loaded
    hooks: dict[str, Hook]
    files: dict[str, str]
    organizations: dict[str, str]
    #: Hooks of this version that do not compile here, with their problems.
    broken: dict[str, list[Problem]]

    @classmethod
    def of(cls, mapping_set: MappingSet, loaded: Loaded) -> LoadedVersion:
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


def report(
    old: LoadedVersion, new: LoadedVersion, window: dict[str, Any], hooks: list[dict[str, Any]]
) -> dict[str, Any]:
    """The whole report (the JSON of ``mappings diff --json`` and of the API): which versions and
    window, the totals, and each hook's part."""
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
        "window": window,
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


def settings_changes(
    before: Hook | None, after: Hook | None, old_org: str | None, new_org: str | None
) -> list[dict[str, Any]]:
    """The hook's settings that differ (what happens to an unmatched event, whose organization…)."""
    if before is None or after is None:
        return []
    old, new = _settings(before, old_org), _settings(after, new_org)
    return [{"setting": k, "before": old[k], "after": new[k]} for k in old if old[k] != new[k]]

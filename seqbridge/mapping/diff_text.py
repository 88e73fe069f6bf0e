"""A mapping diff report (:mod:`seqbridge.services.mapping_diff`) as text for people: which
versions were compared, then per hook what changed, then one summary line. Like
``git diff --stat`` followed by the details: counts first, a few example deliveries per group."""

from __future__ import annotations

import json
from typing import Any

_SIGNS = {"added": "+", "removed": "-", "changed": "~"}
_STATES = {
    "changed": "changed",
    "unchanged": "no change",
    "identical": "no change (identical source, not replayed)",
    "added": "added (not in the version before)",
    "removed": "removed (not in the version after)",
    "skipped": "NOT COMPARED",
}


def render(report: dict[str, Any]) -> str:
    """The whole report as text (ends with a newline)."""
    lines = [*_version("before", report["before"]), *_version("after", report["after"])]
    window = report["window"]
    since = f"since {window['since']}" if window["since"] else "at any time"
    statuses = ", ".join(window["statuses"])
    lines.append(f"window: deliveries received {since} ({statuses}), the newest {window['limit']:,} per hook")
    for hook in report["hooks"]:
        lines.append("")
        lines.extend(_hook(hook))
    lines.append("")
    lines.append(_summary(report))
    return "\n".join(lines) + "\n"


def _version(side: str, version: dict[str, Any]) -> list[str]:
    ref = f" ({version['ref']})" if version.get("ref") and version["source"] != "git" else ""
    lines = [f"{side + ':':7} {version['label']}{ref}"]
    for f in version["files"]:
        sha = (f["sha256"] or "")[:12] or "unreadable"
        loaded = f"  loaded {f['loaded_at']} by {f['loaded_by']}" if f.get("loaded_at") else ""
        lines.append(f"          {f['file']}  sha256 {sha}{loaded}")
    return lines


def _hook(hook: dict[str, Any]) -> list[str]:
    files = hook["files"]
    where = files["after"] or files["before"]
    lines = [f"{hook['hook']}: {_STATES[hook['change']]}  (organization {hook['organization']}, {where})"]
    if hook["change"] not in ("identical", "skipped"):
        counts = f"{hook['events']:,} events in {hook['deliveries']:,} deliveries compared"
        lines.append(f"  {counts}, {hook['changed_events']:,} changed")
    if hook["settings"]:
        lines.append("  settings")
        for s in hook["settings"]:
            lines.append(f"    {s['setting']}: {_value(s['before'])} -> {_value(s['after'])}")
    if hook["rules"]:
        lines.append("  now matching other rules")
        for g in hook["rules"]:
            lines.append(f"    {g['count']:>7,}  {_rules(g['before'])} -> {_rules(g['after'])}")
            lines.append(_examples(g["examples"]))
    if hook["actions"]:
        lines.append("  actions")
        for g in hook["actions"]:
            rule = f"{g['rule_before']} -> {g['rule']}" if "rule_before" in g else g["rule"]
            fields = f": {', '.join(f['field'] for f in g['fields'])}" if g["change"] == "changed" else ""
            lines.append(
                f"  {_SIGNS[g['change']]} {g['count']:>7,}  {rule}: {g['action']} ({g['target']}){fields}"
            )
            if g["change"] == "changed":
                for f in g["fields"]:
                    before = _value(f["before"]) if "before" in f else "(none)"
                    after = _value(f["after"]) if "after" in f else "(none)"
                    lines.append(f"               {f['field']}: {before} -> {after}")
            else:
                shown = {k: v for k, v in g["sample"].items() if k not in ("action", "target")}
                lines.append(f"               {_value(shown)}")
            lines.append(_examples(g["examples"]))
    for title, key in (("now fail to evaluate", "errors"), ("no longer fail", "fixed")):
        if hook[key]:
            lines.append(f"  {title}")
            for g in hook[key]:
                lines.append(f"  ! {g['count']:>7,}  {g['error']}")
                lines.append(_examples(g["examples"]))
    for g in hook["unreadable_deliveries"]:
        by = "either version" if g["version"] == "both" else f"the {g['version']} version"
        lines.append(f"  ! {g['count']:>7,}  unreadable by {by}: {g['error']}")
        lines.append(_examples(g["examples"]))
    lines.extend(f"  note: {note}" for note in hook["notes"])
    return lines


def _summary(report: dict[str, Any]) -> str:
    s = report["summary"]
    compared = f"{s['hooks']} hook(s), {s['events']:,} events in {s['deliveries']:,} deliveries compared"
    if not report["changed"] and report["complete"]:
        return f"no change: {compared}"
    headline = f"{s['hooks_changed']} hook(s) changed" if report["changed"] else "no change found"
    parts = [headline, compared, f"{s['changed_events']:,} events changed"]
    if s["different_rules"]:
        parts.append(f"{s['different_rules']:,} match other rules")
    if s["actions_added"] or s["actions_removed"] or s["actions_changed"]:
        parts.append(f"actions +{s['actions_added']:,} -{s['actions_removed']:,} ~{s['actions_changed']:,}")
    if s["new_errors"]:
        parts.append(f"{s['new_errors']:,} now fail to evaluate")
    if s["fixed_errors"]:
        parts.append(f"{s['fixed_errors']:,} no longer fail")
    if s["hooks_skipped"]:
        parts.append(f"{s['hooks_skipped']} hook(s) NOT COMPARED")
    return "; ".join(parts)


def _examples(examples: list[dict[str, str]]) -> str:
    shown = [e["delivery_id"] + (f" ({e['event']})" if e.get("event") else "") for e in examples]
    return "               e.g. " + ", ".join(shown)


def _rules(rules: list[str]) -> str:
    return ", ".join(rules) if rules else "(no rule)"


def _value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)

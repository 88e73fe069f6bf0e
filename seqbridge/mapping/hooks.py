"""A hook, compiled from its YAML: the source connector, the targets and the rules.

:func:`compile_hook` turns one ``hooks.<name>`` entry into a :class:`Hook` or a list of
:class:`Problem` s; :meth:`Hook.plan` turns one event into the actions it asks for. Planning is
pure: it touches no database and no network, which is what dry runs and mapping tests rely on.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from connectors import SOURCES, TARGETS
from seqbridge.mapping.rules import (
    Condition,
    EvaluationError,
    Literal,
    RuleError,
    Value,
    compile_condition,
    compile_value,
)
from seqbridge.mapping.source import Document, Problem

ACTIONS = ("enroll", "unenroll", "bulk_enroll", "upsert_contact")
#: How a bulk_enroll names its contacts: a list, or a filter on contact or on company fields.
BULK_MODES = ("contacts", "filter", "customer_filter")
TARGET_TYPES = ("local", *TARGETS)
#: What each target type can do.
TARGET_ACTIONS = {"local": set(ACTIONS), **{name: set(target.actions) for name, target in TARGETS.items()}}
#: Why a dialect cannot do an action, where that needs saying.
_CANNOT = {("event_queues_api", "unenroll"): "the event-queue dialect has no unenroll",
           ("bot_sequences_api", "bulk_enroll"): "the bot dialect has no bulk enroll"}  # fmt: skip


def _contact_fields() -> tuple[tuple[str, ...], set[str]]:
    """The contact fields an upsert may set, and the statuses (imported late: services import us)."""
    from seqbridge.services.contacts import TEXT_FIELDS, ContactStatus

    fields = (*TEXT_FIELDS, "status", "timezone", "converted", "has_open_ticket", "attributes")
    return fields, {s.value for s in ContactStatus}


@dataclass(frozen=True)
class Target:
    name: str
    type: str
    #: The connector for a remote target (None for local).
    client: Any = None


LOCAL = Target("local", "local")


@dataclass(frozen=True)
class ActionSpec:
    kind: str
    target: str
    params: Value

    def plan(self, ctx: dict[str, Any]) -> dict[str, Any]:
        """The action for this event, every value computed. Raises :class:`EvaluationError`."""
        return {"action": self.kind, "target": self.target, **_clean(self.params.eval(ctx))}


@dataclass(frozen=True)
class Rule:
    name: str
    when: Condition
    actions: tuple[ActionSpec, ...]
    stop: bool


@dataclass(frozen=True)
class EventPlan:
    """What one event asks for: the rules that matched (in order) and their actions."""

    rules: list[str]
    actions: list[dict[str, Any]]

    @property
    def matched(self) -> bool:
        return bool(self.rules)


@dataclass
class Hook:
    name: str
    file: str
    organization: str
    connector_name: str
    connector: Any
    rules: list[Rule]
    targets: dict[str, Target]
    respond: str = "queued"
    respond_timeout_seconds: float = 5.0
    rate_per_second: float | None = None
    rate_burst: int | None = None
    max_body_bytes: int | None = None
    on_unmatched: str = "ignore"
    #: (line, test) for each test written in the hook's ``tests:`` list.
    tests: list[tuple[int, dict[str, Any]]] = field(default_factory=list)

    def plan(self, ctx: dict[str, Any]) -> EventPlan:
        """Evaluate the rules in order against one event context. Raises :class:`EvaluationError`."""
        matched: list[str] = []
        actions: list[dict[str, Any]] = []
        for rule in self.rules:
            if not rule.when(ctx):
                continue
            matched.append(rule.name)
            actions.extend(spec.plan(ctx) for spec in rule.actions)
            if rule.stop:
                break
        return EventPlan(matched, actions)

    def describe(self) -> dict[str, Any]:
        """What the operator API shows: never the source's settings (they hold secrets)."""
        return {
            "name": self.name,
            "file": self.file,
            "organization": self.organization,
            "connector": self.connector_name,
            "respond": self.respond,
            "on_unmatched": self.on_unmatched,
            "rules": [r.name for r in self.rules],
            "targets": sorted(self.targets),
        }


def _clean(params: Any) -> dict[str, Any]:
    """Drop empty contact identifiers, so a template that rendered "" counts as not given."""
    if not isinstance(params, dict):
        raise EvaluationError("an action's settings must be an object")
    contact = params.get("contact")
    if isinstance(contact, dict):
        params = {**params, "contact": {k: v for k, v in contact.items() if v not in (None, "")}}
    return params


def _known_part(written: Any) -> Any:
    """A filter as far as the file fixes it: ``{path: …}`` values (known only at run time) read as
    a string, which any field takes; a filter that is itself ``{path: …}`` is not checked here."""
    if not isinstance(written, dict):
        return written
    if set(written) == {"path"}:
        return None
    return {k: "" if isinstance(v, dict) and set(v) == {"path"} else v for k, v in written.items()}


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Compiler:
    def __init__(self, doc: Document, base: tuple, targets: dict[str, Target]) -> None:
        self.doc = doc
        self.base = base
        self.targets = targets
        self.problems: list[Problem] = []

    def problem(self, path: tuple, message: str) -> None:
        self.problems.append(self.doc.at((*self.base, *path), message))

    def action(self, source: dict[str, Any], path: tuple) -> ActionSpec | None:
        kinds = [k for k in ACTIONS if k in source]
        if len(kinds) != 1:
            self.problem(path, f"an action needs exactly one of {', '.join(ACTIONS)}")
            return None
        kind = kinds[0]
        target_name = source.get("target", "local")
        target = self.targets.get(target_name)
        if target is None:
            self.problem((*path, "target"),
                         f"unknown target {target_name!r}{did_you_mean(target_name, sorted(self.targets))}")  # fmt: skip
            return None
        if kind not in TARGET_ACTIONS.get(target.type, set()):
            why = _CANNOT.get((target.type, kind))
            self.problem(
                (*path, kind),
                f"target {target_name!r} ({target.type}) cannot {kind}" + (f": {why}" if why else ""),
            )
            return None
        spec_ref = (source[kind] or {}).get("sequence", (source[kind] or {}).get("queue"))
        if target.type != "local" and kind == "unenroll" and spec_ref == "*":
            self.problem(
                (*path, kind), f'unenroll from "*" works on the local target only, not {target_name!r}'
            )
            return None
        spec = source[kind] or {}
        where = (*path, kind)
        if kind in ("enroll", "unenroll", "bulk_enroll"):
            given = [k for k in ("sequence", "queue") if k in spec]
            if len(given) != 1:
                self.problem(where, f"{kind} needs exactly one of sequence or queue")
        if kind == "bulk_enroll":
            if len([k for k in BULK_MODES if k in spec]) != 1:
                self.problem(where, "bulk_enroll needs exactly one of contacts, filter or customer_filter")
            self.filters(spec, where)
        if kind == "upsert_contact":
            if not any(k in spec for k in ("email", "phone", "id", "attribute")):
                self.problem(where, "upsert_contact needs email, phone, id or attribute to find the contact")
            fields, statuses = _contact_fields()
            for name, value in (spec.get("set") or {}).items():
                if name not in fields:
                    self.problem((*where, "set", name),
                                 f"unknown contact field {name!r}{did_you_mean(name, fields)}")  # fmt: skip
                elif (
                    name == "status" and isinstance(value, str) and "{" not in value and value not in statuses
                ):
                    self.problem(
                        (*where, "set", name), f"status must be one of {', '.join(sorted(statuses))}"
                    )
        try:
            params = compile_value(spec, where)
        except RuleError as error:
            self.problems.append(self.doc.at((*self.base, *error.path), error.message))
            return None
        if isinstance(params, Literal) and not isinstance(params.value, dict):
            self.problem(where, f"{kind} takes an object")
            return None
        return ActionSpec(kind, target_name, params)

    def filters(self, spec: dict[str, Any], where: tuple) -> None:
        """Check the fields of a bulk_enroll filter written in the file with the service's own check
        (values computed at run time are checked again then)."""
        from seqbridge.services.enrollment import filter_problems

        given = {key: _known_part(spec.get(key)) for key in ("filter", "customer_filter")}
        for problem in filter_problems(given["filter"], given["customer_filter"]):
            key = "filter" if problem.axis == "contact_filter" else "customer_filter"
            message = problem.message.replace("contact_filter", "filter")
            self.problem(
                (*where, key, problem.field) if problem.field else (*where, key),
                f"bulk_enroll {key}: {message}",
            )

    def rule(self, source: dict[str, Any], index: int) -> Rule | None:
        path = ("rules", index)
        try:
            when = compile_condition(source.get("when"), (*path, "when"))
        except RuleError as error:
            self.problems.append(self.doc.at((*self.base, *error.path), error.message))
            when = None
        actions = [self.action(a, (*path, "actions", i)) for i, a in enumerate(source.get("actions") or [])]
        if when is None or any(a is None for a in actions):
            return None
        name = source.get("name") or f"rule {index + 1}"
        return Rule(name, when, tuple(a for a in actions if a), source.get("then", "stop") == "stop")


def compile_targets(
    doc: Document, base: tuple, source: dict[str, Any] | None, allow_private: bool = False
) -> tuple[dict[str, Target], list[Problem]]:
    """The ``targets:`` block at ``base``: each remote one gets its connector (settings checked now)."""
    targets: dict[str, Target] = {}
    problems: list[Problem] = []
    for name, settings in (source or {}).items():
        kind = settings.get("type")
        if kind not in TARGET_TYPES:
            problems.append(
                doc.at((*base, name, "type"), f"target type {kind!r} is not one of {', '.join(TARGET_TYPES)}")
            )
            continue
        if kind == "local":
            targets[name] = Target(name, kind)
            continue
        try:
            client = TARGETS[kind](
                name, {k: v for k, v in settings.items() if k != "type"}, allow_private=allow_private
            )
        except (ValueError, TypeError) as error:
            problems.append(doc.at((*base, name), f"target {name!r}: {error}"))
            continue
        targets[name] = Target(name, kind, client)
    return targets, problems


def compile_hook(
    doc: Document,
    name: str,
    source: dict[str, Any],
    shared_targets: dict[str, Target],
    allow_private: bool = False,
) -> tuple[Hook | None, list[Problem]]:
    """Compile ``hooks.<name>`` of ``doc`` (already schema-valid)."""
    base = ("hooks", name)
    own_targets, problems = compile_targets(doc, (*base, "targets"), source.get("targets"), allow_private)
    targets = {"local": LOCAL, **shared_targets, **own_targets}
    compiler = _Compiler(doc, base, targets)
    compiler.problems.extend(problems)

    settings = dict(source["source"])
    connector_name = settings.pop("connector")
    connector = None
    try:
        connector = SOURCES[connector_name](settings)
    except (ValueError, TypeError) as error:
        compiler.problem(("source",), f"{connector_name}: {error}")
    rules = [compiler.rule(r, i) for i, r in enumerate(source.get("rules") or [])]
    if compiler.problems:
        return None, compiler.problems
    rate = source.get("rate_limit") or {}
    hook = Hook(
        name=name,
        file=doc.file,
        organization=source["organization"],
        connector_name=connector_name,
        connector=connector,
        rules=[r for r in rules if r],
        targets=targets,
        respond=source.get("respond", "queued"),
        respond_timeout_seconds=float(source.get("respond_timeout_seconds", 5.0)),
        rate_per_second=rate.get("per_second"),
        rate_burst=rate.get("burst"),
        max_body_bytes=source.get("max_body_bytes"),
        on_unmatched=source.get("on_unmatched", "ignore"),
        tests=[(doc.at((*base, "tests", i), "").line, t) for i, t in enumerate(source.get("tests") or [])],
    )
    return hook, []

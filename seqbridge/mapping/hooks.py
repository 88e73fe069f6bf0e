"""A hook, compiled from its YAML: the source connector, the targets and the rules.

:func:`compile_hook` turns one ``hooks.<name>`` entry into a :class:`Hook` or a list of
:class:`Problem` s; :meth:`Hook.plan` turns one event into the actions it asks for. Planning is
pure: it touches no database and no network, which is what dry runs and mapping tests rely on.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from typing import Any

from connectors import SOURCES, TARGETS
from connectors.base import InboundEvent, InboundRequest
from seqbridge.audit import REDACTED, redact
from seqbridge.mapping.context import event_context, parse_body
from seqbridge.mapping.rules import (
    Condition,
    EvaluationError,
    Literal,
    Roots,
    RuleError,
    Value,
    compile_condition,
    compile_value,
    condition_roots,
    union,
    value_roots,
)
from seqbridge.mapping.source import Document, Problem

ACTIONS = ("enroll", "unenroll", "bulk_enroll", "upsert_contact")
#: How a bulk_enroll names its contacts: a list, or a filter on contact or on company fields.
BULK_MODES = ("contacts", "filter", "customer_filter")
TARGET_TYPES = ("local", *TARGETS)
#: What each target type can do.
TARGET_ACTIONS = {"local": set(ACTIONS), **{name: set(target.actions) for name, target in TARGETS.items()}}
#: Why a dialect cannot do an action, where that needs saying.
_CANNOT = {
    ("event_queues_api", "unenroll"): "the event-queue dialect has no unenroll",
    ("bot_sequences_api", "bulk_enroll"): "the bot dialect has no bulk enroll",
}


#: A body-hash key's dedupe window unless the hook says otherwise, and the most it may say.
DEFAULT_DEDUPE_WINDOW = timedelta(minutes=10)
MAX_DEDUPE_WINDOW = timedelta(days=7)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def dedupe_setting(value: str | int | timedelta) -> timedelta | None:
    """A hook's ``dedupe`` (``30s``, ``10m``, ``2h``, ``1d`` or seconds; the schema checked the
    form) as a window, or None when it is longer than :data:`MAX_DEDUPE_WINDOW`."""
    try:
        if isinstance(value, timedelta):
            window = value
        elif isinstance(value, int):
            window = timedelta(seconds=value)
        else:
            window = timedelta(**{_UNITS[value[-1]]: int(value[:-1])})
    except OverflowError:
        return None
    return window if window <= MAX_DEDUPE_WINDOW else None


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
    #: A fingerprint of the action as written: equal keys plan alike for every event.
    key: str = ""

    def plan(self, ctx: dict[str, Any]) -> dict[str, Any]:
        """The action for this event, every value computed. Raises :class:`EvaluationError`."""
        return {"action": self.kind, "target": self.target, **_clean(self.params.eval(ctx))}


@dataclass(frozen=True)
class Rule:
    name: str
    when: Condition
    actions: tuple[ActionSpec, ...]
    stop: bool
    #: A fingerprint of the rule as written (its YAML, anchors merged, ``${ENV}`` expanded): two
    #: rules with the same key decide and plan alike for every event, whichever hook holds them.
    key: str = ""
    #: The context keys the rule can read (``event``, ``body`` …); None: any.
    reads: Roots = None
    #: Claim order: a delivery with an event this rule matches goes before every ordinary one
    #: (``priority: high`` is 1; ``normal``, the default, 0). Decided at receipt: see
    #: :meth:`Hook.priority_of`.
    priority: int = 0
    #: The context keys the rule's ``when`` reads (what deciding the priority needs); None: any.
    decides: Roots = None


#: A rule's ``priority:`` as the ``deliveries.priority`` it gives.
PRIORITIES = {"normal": 0, "high": 1}


#: A memo shared by the plans of one event under several versions of a hook (a mapping diff):
#: rule key → the actions the rule planned (None when it did not match); "action:" + action key →
#: the action planned.
Memo = dict[str, Any]

_UNSEEN = object()


@dataclass(frozen=True)
class EventPlan:
    """What one event asks for: the rules that matched (in order) and their actions, with the
    rule that planned each action (``action_rules``, parallel to ``actions``)."""

    rules: list[str]
    actions: list[dict[str, Any]]
    action_rules: list[str] = field(default_factory=list)

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
    #: How long a repeat of a body-hash key is a duplicate (the ``dedupe`` setting).
    dedupe_window: timedelta = DEFAULT_DEDUPE_WINDOW
    on_unmatched: str = "ignore"
    #: (line, test) for each test written in the hook's ``tests:`` list.
    tests: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    #: A fingerprint of the source settings that decide how a request reads (secrets only
    #: verify): equal keys read a request into the same events.
    source_key: str = ""

    def plan(self, ctx: dict[str, Any], memo: Memo | None = None) -> EventPlan:
        """Evaluate the rules in order against one event context. Raises :class:`EvaluationError`.

        With ``memo`` (one per event context), a rule whose key is in it is not evaluated again:
        a diff plans each event with two versions of a hook, and most of their rules are the same.
        """
        matched: list[str] = []
        actions: list[dict[str, Any]] = []
        origins: list[str] = []
        for rule in self.rules:
            if memo is None:
                if not rule.when(ctx):
                    continue
                planned = [spec.plan(ctx) for spec in rule.actions]
            else:
                seen = memo.get(rule.key, _UNSEEN)
                if seen is _UNSEEN:
                    seen = [_planned(spec, ctx, memo) for spec in rule.actions] if rule.when(ctx) else None
                    memo[rule.key] = seen
                if seen is None:
                    continue
                planned = seen
            matched.append(rule.name)
            actions.extend(planned)
            origins.extend([rule.name] * len(planned))
            if rule.stop:
                break
        return EventPlan(matched, actions, origins)

    def priority_of(
        self, events: list[InboundEvent], request: InboundRequest, received_at: str | None
    ) -> int:
        """The claim priority of a delivery with these freshly parsed events: the highest
        ``priority`` of a rule that matches one of them, 0 when none does (the receipt path;
        most hooks have no prioritised rule, and then this is one attribute read).

        Only the rules' ``when`` run, in order, up to the last prioritised rule, stopping where
        the planner would (``then: stop``): no action is planned and, unless one of those
        conditions reads ``body``, the body is not parsed. A condition that raises counts as not
        matching: the worker's full plan decides what the delivery does; this only orders it.
        """
        triage = self._triage
        if triage is None or not events:
            return 0
        rules, reads_body = triage
        body = parse_body(request.body, request.content_type) if reads_body else None
        best = 0
        for event in events:
            ctx = event_context(
                hook=self.name,
                event={"dedupe_key": event.dedupe_key, "kind": event.kind, "data": event.data},
                body=body,
                headers=request.headers,
                query=request.query,
                received_at=received_at,
            )
            for rule in rules:
                try:
                    if not rule.when(ctx):
                        continue
                except Exception:  # ordering only: the worker's plan reports it
                    break
                best = max(best, rule.priority)
                if rule.stop:
                    break
        return best

    @property
    def prioritised(self) -> bool:
        """Does some rule of this hook have a priority (so receipts need :meth:`priority_of`)?"""
        return self._triage is not None

    @cached_property
    def _triage(self) -> tuple[list[Rule], bool] | None:
        """The rules :meth:`priority_of` evaluates (up to the last with a priority) and whether
        their conditions read the body; None when no rule has a priority."""
        last = max((i for i, rule in enumerate(self.rules) if rule.priority), default=None)
        if last is None:
            return None
        rules = self.rules[: last + 1]
        decides = union([rule.decides for rule in rules])
        return rules, decides is None or "body" in decides

    @cached_property
    def reads(self) -> Roots:
        """The context keys some rule of this hook can read; None: any."""
        return union([rule.reads for rule in self.rules])

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


def _planned(spec: ActionSpec, ctx: dict[str, Any], memo: Memo) -> dict[str, Any]:
    """``spec.plan(ctx)``, once per action as written: a changed rule often keeps its actions."""
    key = "action:" + spec.key
    action = memo.get(key)
    if action is None:
        action = memo[key] = spec.plan(ctx)
    return action


def _clean(params: Any) -> dict[str, Any]:
    """Drop empty contact identifiers, so a template that rendered "" counts as not given."""
    if not isinstance(params, dict):
        raise EvaluationError("an action's settings must be an object")
    contact = params.get("contact")
    if isinstance(contact, dict):
        params = {**params, "contact": {k: v for k, v in contact.items() if v not in (None, "")}}
    return params


def _fingerprint(source: dict[str, Any]) -> str:
    """What a rule decides and plans depends on its YAML only (the name aside, which is output).
    ``description`` and ``priority`` (which orders deliveries, not what they do) are left out."""
    decisive = {k: v for k, v in source.items() if k not in ("name", "description", "priority")}
    return hashlib.sha256(json.dumps(decisive, sort_keys=True, default=str).encode()).hexdigest()


def _known_part(written: Any) -> Any:
    """A filter as far as the file fixes it: ``{path: …}`` values (known only at run time) read as
    a string, which any field takes; a filter that is itself ``{path: …}`` is not checked here."""
    if not isinstance(written, dict):
        return written
    if set(written) == {"path"}:
        return None
    return {k: "" if isinstance(v, dict) and set(v) == {"path"} else v for k, v in written.items()}


def _reading_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """A source's settings less its secrets, which only verify: parsing never reads them."""
    return {k: v for k, v in settings.items() if redact({k: "x"})[k] != REDACTED}


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
            self.problem(
                (*path, "target"),
                f"unknown target {target_name!r}{did_you_mean(target_name, sorted(self.targets))}",
            )
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
                    self.problem(
                        (*where, "set", name), f"unknown contact field {name!r}{did_you_mean(name, fields)}"
                    )
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
        return ActionSpec(kind, target_name, params, _fingerprint(source))

    def filters(self, spec: dict[str, Any], where: tuple) -> None:
        """Check the fields of a bulk_enroll filter written in the file with the service's own check
        (values computed at run time are checked again then)."""
        from seqbridge.services.filters import filter_problems

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
        stop = source.get("then", "stop") == "stop"
        values = [value_roots(a[kind]) for a in source.get("actions") or [] for kind in ACTIONS if kind in a]
        decides = condition_roots(source.get("when"))
        reads = union([decides, *values])
        priority = PRIORITIES[source.get("priority", "normal")]
        return Rule(
            name, when, tuple(a for a in actions if a), stop, _fingerprint(source), reads, priority, decides
        )


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
    dedupe_window = dedupe_setting(source.get("dedupe", DEFAULT_DEDUPE_WINDOW))
    if dedupe_window is None:
        compiler.problem(
            ("dedupe",), f"dedupe is at most {MAX_DEDUPE_WINDOW.days}d (the retention keeps keys 7 days)"
        )
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
        dedupe_window=DEFAULT_DEDUPE_WINDOW if dedupe_window is None else dedupe_window,
        on_unmatched=source.get("on_unmatched", "ignore"),
        tests=[(doc.at((*base, "tests", i), "").line, t) for i, t in enumerate(source.get("tests") or [])],
        source_key=_fingerprint(_reading_settings(source["source"])),
    )
    return hook, []

"""Running a hook without acting: dry runs, and the tests written beside a mapping.

:func:`simulate` parses a request with the hook's connector (no signature check) and plans each
event. Nothing touches a database or a network, so ``seqbridge mappings test`` runs anywhere.

Tests live in a hook's ``tests:`` list or in ``<file>_test.yaml`` beside the mapping::

    tests:
      whatsapp:                      # the hook
        - name: STOP unsubscribes
          body_file: fixtures/stop.json
          expect:
            rules: [stop]
            contains:
              - {action: unenroll, sequence: "*", reason: unsubscribed}
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jsonschema import Draft202012Validator

from connectors.base import InboundRequest, MalformedPayload
from seqbridge.mapping.hooks import Hook
from seqbridge.mapping.planner import plan_request
from seqbridge.mapping.registry import expand, load_all, schema
from seqbridge.mapping.source import Document, Problem, ProblemsFound, read_file


def simulate(hook: Hook, request: InboundRequest, received_at: str | None = None) -> list[dict[str, Any]]:
    """Each event of ``request`` with the rules that matched and the actions planned.

    Raises :class:`MalformedPayload` when the connector cannot read the body.
    """
    return [event.to_dict() for event in plan_request(hook, request, received_at)]


def build_request(spec: dict[str, Any], base_dir: Path, hook: str = "hook") -> InboundRequest:
    """An unsigned request from a test or dry-run spec (``body`` or ``body_file``, ``content_type``,
    ``headers``, ``query``)."""
    content_type = spec.get("content_type")
    if spec.get("body_file"):
        raw = (base_dir / spec["body_file"]).read_bytes()
        if content_type is None:
            content_type = (
                "application/json"
                if spec["body_file"].endswith(".json")
                else "application/x-www-form-urlencoded"
            )
    else:
        body = spec.get("body")
        if isinstance(body, str):
            raw = body.encode()
            content_type = content_type or "application/x-www-form-urlencoded"
        elif isinstance(body, dict) and (content_type or "").startswith("application/x-www-form-urlencoded"):
            raw = urlencode(body, doseq=True).encode()
        else:
            raw = json.dumps(body).encode()
            content_type = content_type or "application/json"
    query = {k: [str(v)] for k, v in (spec.get("query") or {}).items()}
    headers = {k.lower(): str(v) for k, v in (spec.get("headers") or {}).items()}
    url = f"https://seqbridge.test/hooks/{hook}" + (
        f"?{urlencode(spec['query'])}" if spec.get("query") else ""
    )
    return InboundRequest("POST", url, headers, query, raw, content_type)


@dataclass(frozen=True)
class TestOutcome:
    hook: str
    name: str
    file: str
    line: int
    failures: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.failures


def _subset(expected: Any, actual: Any) -> bool:
    """``expected`` is contained in ``actual``: dict keys recursively, other values equal."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and _subset(v, actual[k]) for k, v in expected.items()
        )
    return expected == actual


def check(hook: Hook, test: dict[str, Any], base_dir: Path) -> list[str]:
    """The failures of one test (empty when it passes)."""
    try:
        results = simulate(hook, build_request(test, base_dir, hook.name))
    except MalformedPayload as error:
        return [f"the connector cannot read the body: {error}"]
    except OSError as error:
        return [f"cannot read the fixture: {error.strerror}"]
    expect = test.get("expect") or {}
    failures = []
    errors = [r["error"] for r in results if r.get("error")]
    if errors:
        failures.append("evaluation failed: " + "; ".join(errors))
    if "events" in expect and expect["events"] != len(results):
        failures.append(f"events: expected {expect['events']}, received {len(results)}")
    if "rules" in expect:
        received = [(r["rules"][0] if len(r["rules"]) == 1 else r["rules"] or None) for r in results]
        if expect["rules"] != received:
            failures.append(f"rules: expected {_show(expect['rules'])}, received {_show(received)}")
    actions = [a for r in results for a in r["actions"]]
    if "actions" in expect and expect["actions"] != actions:
        failures.append(f"actions:\n  expected {_show(expect['actions'])}\n  received {_show(actions)}")
    for wanted in expect.get("contains") or []:
        if not any(_subset(wanted, a) for a in actions):
            failures.append(f"no planned action contains {_show(wanted)}\n  received {_show(actions)}")
    return failures


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


_TEST_FILE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["tests"],
    "properties": {
        "tests": {
            "type": "object",
            "additionalProperties": {"type": "array", "items": {"$ref": "#/$defs/test"}},
        }
    },
}


def _test_file_tests(path: Path) -> tuple[list[tuple[str, int, dict[str, Any], Path]], list[Problem]]:
    try:
        doc: Document = read_file(str(path))
    except ProblemsFound as found:
        return [], found.problems
    validator = Draft202012Validator({**_TEST_FILE_SCHEMA, "$defs": schema()["$defs"]})
    problems = [doc.at(tuple(e.absolute_path), e.message) for e in validator.iter_errors(doc.data)]
    if problems:
        return [], problems
    found = []
    for hook, tests in (doc.data or {}).get("tests", {}).items():
        for index, test in enumerate(tests):
            found.append((hook, doc.at(("tests", hook, index), "").line, test, path.parent))
    return found, []


class PlaceholderEnvironment(dict):
    """The environment, where an unset variable with no default reads as a placeholder: tests
    check the rules, not the secrets (no signature is verified), so they run on a machine that
    holds none."""

    def __init__(self) -> None:
        super().__init__(os.environ)

    @staticmethod
    def placeholder(name: str) -> str:
        return f"placeholder-{name.lower()}"


def run_tests(paths: list[str]) -> tuple[list[TestOutcome], list[Problem]]:
    """Run every test of the mapping files under ``paths``; return the outcomes and any problems
    that kept hooks or test files from loading."""
    files = expand(paths)
    loaded = load_all(files, PlaceholderEnvironment())
    problems = loaded.problems()
    hooks: dict[str, Hook] = {}
    for result in loaded.results:
        hooks.update({n: h for n, h in result.hooks.items() if n not in loaded.duplicates})
    outcomes = []
    for hook in hooks.values():
        for line, test in hook.tests:
            outcomes.append(
                TestOutcome(
                    hook.name, test["name"], hook.file, line, tuple(check(hook, test, Path(hook.file).parent))
                )
            )
    for file in files:
        test_file = Path(file).with_name(Path(file).stem + "_test" + Path(file).suffix)
        if not test_file.exists():
            continue
        tests, test_problems = _test_file_tests(test_file)
        problems.extend(test_problems)
        for hook_name, line, test, base in tests:
            hook = hooks.get(hook_name)
            failures = (
                (f"no valid hook named {hook_name!r}",) if hook is None else tuple(check(hook, test, base))
            )
            outcomes.append(TestOutcome(hook_name, test["name"], str(test_file), line, failures))
    return outcomes, sorted(set(problems))

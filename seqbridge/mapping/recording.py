"""Golden tests from production: a stored delivery becomes a test case beside its mapping.

``seqbridge mappings test --record DELIVERY_ID`` writes the delivery's body to a fixture file and
appends a case to the hook's ``<file>_test.yaml`` (created if missing; comments and the other
cases are kept) whose ``expect`` is what the mapping plans for it now. From then on
``mappings test`` runs it, and it fails the day a change plans something else for that delivery.

Nothing secret is written: headers and query arrive redacted as the deliveries API shows them;
every redacted value, every header a connector signs or authenticates with, and every value of the
hook's own source settings that looks like a secret are left out or blanked.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarstring import DoubleQuotedScalarString

from connectors.base import MalformedPayload
from seqbridge.audit import REDACTED, redact
from seqbridge.mapping.hooks import Hook
from seqbridge.mapping.source import ProblemsFound, read_document, read_file
from seqbridge.mapping.sources import secret_name
from seqbridge.mapping.testing import PlaceholderEnvironment, build_request, check, simulate

#: Headers a sender signs or authenticates with, beyond what the audit rule already redacts
#: (names with signature, token, authorization, secret, key, cookie …).
SIGNATURE_HEADERS = frozenset(
    [
        "x-hub-signature",
        "x-hub-signature-256",
        "x-twilio-signature",
        "typeform-signature",
        "x-hubspot-signature",
        "x-hubspot-signature-v3",
        "x-hubspot-request-timestamp",
        "webhook-signature",
        "webhook-timestamp",
        "svix-signature",
        "svix-timestamp",
        "authorization",
        "proxy-authorization",
        "cookie",
    ]
)
#: Headers that describe the transport, not the request: a test has no use for them.
TRANSPORT_HEADERS = frozenset(
    [
        "host",
        "content-length",
        "content-type",
        "connection",
        "accept-encoding",
        "transfer-encoding",
        "user-agent",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-real-ip",
        "x-request-id",
    ]
)


class RecordError(Exception):
    """The delivery cannot be recorded (no body kept, already recorded, a file that would change)."""


@dataclass(frozen=True)
class Recorded:
    test_file: Path
    fixture: Path
    case: dict[str, Any]
    #: Said to the operator: e.g. the fixture reads into other events than the stored ones.
    warnings: tuple[str, ...]


def record(hook: Hook, delivery: dict[str, Any], name: str | None = None) -> Recorded:
    """Write ``delivery`` (a ``deliveries`` row of ``hook``) as a test case of ``hook``.
    Raises :class:`RecordError`."""
    if delivery.get("body") is None:
        raise RecordError(f"delivery {delivery['id']} kept no body (it was rejected before verification)")
    mapping = Path(hook.file)
    test_file = mapping.with_name(f"{mapping.stem}_test{mapping.suffix}")
    content_type = delivery.get("content_type") or ""
    extension = "json" if "json" in content_type else "form" if "urlencoded" in content_type else "txt"
    fixture = mapping.parent / "fixtures" / f"{hook.name}-{delivery['id']}.{extension}"
    secrets = _secret_values(hook)
    case: dict[str, Any] = {
        "name": name or f"delivery {delivery['id']} ({_day(delivery)})",
        "body_file": fixture.relative_to(mapping.parent).as_posix(),
    }
    if content_type and content_type != _implied(extension):
        case["content_type"] = content_type
    headers = _headers(delivery.get("headers") or {}, hook, secrets)
    if headers:
        case["headers"] = headers
    query = _query(delivery.get("query") or {}, secrets)
    if query:
        case["query"] = query
    body = _blank(delivery["body"], secrets)
    existing = _existing_tests(test_file, hook.name)
    if any(t.get("body_file") == case["body_file"] for t in existing):
        raise RecordError(f"delivery {delivery['id']} is already a test in {test_file}")
    fixture.parent.mkdir(parents=True, exist_ok=True)
    fixture.write_bytes(body)
    try:
        results = simulate(hook, build_request(case, mapping.parent, hook.name))
    except MalformedPayload as error:
        fixture.unlink()
        raise RecordError(f"the connector cannot read the recorded body: {error}") from None
    errors = [r["error"] for r in results if r.get("error")]
    if errors:  # a test cannot expect an error: the rule needs fixing first
        fixture.unlink()
        raise RecordError(f"an event of it fails to evaluate now ({errors[0]}); fix the rule, then record it")
    case["expect"] = {
        "rules": [(r["rules"][0] if len(r["rules"]) == 1 else r["rules"] or None) for r in results],
        "actions": [a for r in results for a in r["actions"]],
    }
    warnings = []
    stored = [(e.get("kind"), e.get("data")) for e in delivery.get("events") or []]
    if stored and stored != [(r["kind"], r["data"]) for r in results]:
        warnings.append(
            "the fixture reads into other events than the stored ones (a header or a secret left out "
            "of it matters to the connector): check the case"
        )
    failures = check(hook, case, mapping.parent)
    if failures:
        fixture.unlink()
        raise RecordError("the recorded case does not pass: " + "; ".join(failures))
    try:
        _append(test_file, hook.name, case)
    except RecordError:
        fixture.unlink()
        raise
    return Recorded(test_file, fixture, case, tuple(warnings))


def _day(delivery: dict[str, Any]) -> str:
    received = delivery.get("received_at")
    return received.strftime("%Y-%m-%d %H:%M UTC") if received is not None else "stored"


def _implied(extension: str) -> str:
    """The content type a test's ``body_file`` implies (see :func:`build_request`)."""
    return "application/json" if extension == "json" else "application/x-www-form-urlencoded"


def _secret_values(hook: Hook) -> set[str]:
    """The hook's own secrets: every source setting whose name says secret, token, password …,
    and every source setting read from the environment."""
    try:
        doc = read_file(hook.file, PlaceholderEnvironment())
    except ProblemsFound:
        return set()
    source = ((doc.data or {}).get("hooks") or {}).get(hook.name, {}).get("source") or {}
    values: set[str] = set()
    for key, value in source.items():
        from_env = ("hooks", hook.name, "source", key) in doc.from_env
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and len(item) >= 4 and (from_env or secret_name(key)):
                values.add(item)
    return values


def _blank(raw: bytes, secrets: set[str]) -> bytes:
    for secret in sorted(secrets, key=len, reverse=True):
        for form in {secret, quote(secret, safe=""), quote_plus(secret)}:
            raw = raw.replace(form.encode(), REDACTED.encode())
    text = raw.decode("utf-8", "surrogateescape")  # API keys and signing secrets in the text, too
    return redact(text).encode("utf-8", "surrogateescape")


def _headers(stored: dict[str, str], hook: Hook, secrets: set[str]) -> dict[str, str]:
    token = getattr(getattr(hook.connector, "auth", None), "header", None)
    dropped = SIGNATURE_HEADERS | TRANSPORT_HEADERS | ({token.lower()} if token else set())
    kept = {}
    for name, value in redact(stored).items():
        lower = name.lower()
        if lower in dropped or not isinstance(value, str) or REDACTED in value:
            continue
        if any(secret in value for secret in secrets):
            continue
        kept[lower] = value
    return kept


def _query(stored: dict[str, Any], secrets: set[str]) -> dict[str, str]:
    kept = {}
    for name, values in redact(stored).items():
        value = values[-1] if isinstance(values, list) and values else values
        if not isinstance(value, str) or REDACTED in value:
            continue
        if any(secret in value for secret in secrets):
            continue
        kept[name] = value
    return kept


# Writing the test file -----------------------------------------------------------------------------


def _existing_tests(test_file: Path, hook: str) -> list[dict[str, Any]]:
    if not test_file.exists():
        return []
    try:
        data = read_file(str(test_file)).data or {}
    except ProblemsFound as found:
        raise RecordError(f"{test_file} does not read: {found.problems[0]}") from None
    tests = (data.get("tests") or {}).get(hook) if isinstance(data, dict) else None
    return tests if isinstance(tests, list) else []


def _yaml() -> YAML:
    writer = YAML()
    writer.preserve_quotes = True
    writer.width = 4096
    writer.indent(mapping=2, sequence=4, offset=2)
    return writer


def _append(test_file: Path, hook: str, case: dict[str, Any]) -> None:
    """Append ``case`` to ``tests.<hook>`` of ``test_file`` and check that the file now reads as
    before plus that case, nothing else. Raises :class:`RecordError`."""
    writer = _yaml()
    before: Any = {"tests": {}}
    if test_file.exists():
        text = test_file.read_text()
        before = read_document(str(test_file), text).data or {"tests": {}}
        document = writer.load(text)
    else:
        document = CommentedMap({"tests": CommentedMap()})
        document.yaml_set_start_comment(
            f"Tests of {test_file.name.replace('_test', '')}: run with `seqbridge mappings test`.\n"
            "Cases recorded from stored deliveries: `seqbridge mappings test --record DELIVERY_ID`."
        )
    if not isinstance(document, dict) or not isinstance(document.get("tests"), dict):
        raise RecordError(f"{test_file} has no tests: mapping to add the case to")
    tests = document["tests"]
    if tests.get(hook) is None:
        tests[hook] = CommentedSeq()
    tests[hook].append(_styled(case))
    out = io.StringIO()
    writer.dump(document, out)
    text = out.getvalue()
    expected = json.loads(json.dumps(before))
    expected.setdefault("tests", {}).setdefault(hook, []).append(case)
    try:
        written = read_document(str(test_file), text).data
    except ProblemsFound as found:
        raise RecordError(f"the test would not read back ({found.problems[0]}); add it by hand") from None
    if json.loads(json.dumps(written)) != json.loads(json.dumps(expected)):
        raise RecordError(f"{test_file} would not keep its other content as it is; add the case by hand")
    test_file.write_text(text)


def _styled(value: Any, depth: int = 0) -> Any:
    """``value`` for ruamel: actions as one-line flow maps (as the shipped tests write them), and
    every string quoted where a YAML 1.1 reader (ours) would read it as something else."""
    if isinstance(value, dict):
        styled = CommentedMap((k, _styled(v, depth + 1)) for k, v in value.items())
        if depth >= 3:  # expect → actions → [each action]: flow style from there down
            styled.fa.set_flow_style()
        return styled
    if isinstance(value, list):
        styled_list = CommentedSeq(_styled(v, depth + 1) for v in value)
        if depth >= 3 or all(not isinstance(v, dict | list) for v in value):
            styled_list.fa.set_flow_style()
        return styled_list
    if isinstance(value, str) and _misread(value):
        return DoubleQuotedScalarString(value)
    return value


def _misread(text: str) -> bool:
    try:
        return yaml.safe_load(text) != text
    except yaml.YAMLError:
        return True

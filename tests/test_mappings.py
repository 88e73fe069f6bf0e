"""The mapping language: loading (safe YAML, positions, env), validation that points at the line,
the rule engine, reloads, mapping tests, dry runs, and the shipped examples."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from connectors.base import InboundRequest
from seqbridge.mapping.registry import BrokenHook, HookRegistry, validate_paths
from seqbridge.mapping.testing import run_tests, simulate
from tests import factories

ROOT = Path(__file__).resolve().parent.parent

BASE = """
hooks:
  h:
    organization: acme
    source: {connector: generic, public: true}
    rules:
"""


def write(tmp_path: Path, text: str, name: str = "m.yaml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return str(path)


def problems_of(tmp_path, text: str, environ=None) -> list[str]:
    return [f"{p.line}:{p.col}: {p.message}" for p in validate_paths([write(tmp_path, text)], environ or {})]


def hook_with(tmp_path, rules: str, environ=None):
    registry = HookRegistry(str(tmp_path), environ or {}, watch_seconds=0)
    write(tmp_path, BASE + textwrap.indent(textwrap.dedent(rules), "      "))
    registry.reload()
    return registry.get("h")


def plan(hook, payload):
    request = InboundRequest(
        "POST", "https://x/hooks/h", {}, {}, __import__("json").dumps(payload).encode(), "application/json"
    )
    [event] = simulate(hook, request)
    return event


# Validation points at the line -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hooks:\n  h: {organization: acme\n", "YAML syntax"),
        (
            "hooks:\n  h:\n    organisation: acme\n    source: {connector: generic, public: true}\n",
            "3:5: unknown key 'organisation' (did you mean 'organization'?)",
        ),
        (
            "hooks:\n  h:\n    organization: acme\n    source: {connector: whatsap_cloud}\n",
            "4:14: 'whatsap_cloud' is not one of",
        ),
        (BASE + "      - when: {field: 'event.[', equals: 1}\n        actions: []\n", "6:16: bad JMESPath"),
        (
            BASE + "      - when: {field: event.a, matches: '(unclosed'}\n        actions: []\n",
            "6:32: bad regex",
        ),
        (
            BASE
            + "      - actions:\n          - enroll: {sequence: 'S', contact: {email: '{{ event.email '}}\n",
            "7:47: bad template",
        ),
        (
            BASE + "      - actions:\n          - {target: crm, enroll: {sequence: S, contact: {id: x}}}\n",
            "7:14: unknown target 'crm'",
        ),
        (BASE + "      - when: {field: event.a}\n        actions: []\n", "a field test needs an operator"),
        (
            BASE + "      - actions:\n          - enroll: {contact: {id: x}}\n",
            "enroll needs exactly one of sequence or queue",
        ),
        (
            BASE + "      - actions:\n          - upsert_contact: {email: a@b.c, set: {frist_name: A}}\n",
            "did you mean 'first_name'",
        ),
        (
            "hooks:\n  h:\n    organization: acme\n    organization: other\n    source: {connector: generic, public: true}\n",
            "4:5: duplicate key 'organization'",
        ),
        (
            'hooks:\n  h:\n    organization: acme\n    source: {connector: whatsapp_cloud, app_secret: "${NOPE}"}\n',
            "environment variable NOPE is not set and has no default",
        ),
        (
            "hooks:\n  h:\n    organization: acme\n    source: {connector: whatsapp_cloud, app_secret: s}\n",
            "whatsapp_cloud: missing setting(s): verify_token",
        ),
        ("x: !!python/object/apply:os.system ['true']\n", "1:4: the tag"),
    ],
    ids=[
        "syntax",
        "unknown-key",
        "connector",
        "jmespath",
        "regex",
        "template",
        "target",
        "operator",
        "enroll-needs-sequence",
        "contact-field",
        "duplicate-key",
        "env",
        "connector-settings",
        "python-tag",
    ],
)
def test_each_problem_is_reported_at_its_line(tmp_path, text, expected):
    found = problems_of(tmp_path, text)
    assert any(expected in p for p in found), found


def test_alias_bombs_deep_nesting_and_huge_files_are_refused(tmp_path):
    lol = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(8)
    )
    assert any("alias bomb" in p for p in problems_of(tmp_path, lol))
    assert any("nested deeper" in p for p in problems_of(tmp_path, "a: " + "[" * 200 + "]" * 200 + "\n"))
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (1024 * 1024 + 10) + "\n")
    assert "larger than" in str(validate_paths([str(big)], {})[0])


def test_env_interpolation_and_secrets_never_in_messages(tmp_path):
    text = """
        hooks:
          h:
            organization: ${ORG:-acme}
            source: {connector: standard_webhooks, secret: "${SECRET}"}
            rules: []
    """
    registry = HookRegistry(str(tmp_path), {"SECRET": "whsec_c2VjcmV0c2VjcmV0c2VjcmV0"}, watch_seconds=0)
    write(tmp_path, text)
    registry.reload()
    hook = registry.get("h")
    assert hook.organization == "acme"
    assert "whsec" not in repr(registry.statuses())
    # $${...} is a literal
    assert problems_of(tmp_path, "hooks: {}\nversion: 1\ntargets: {}\n# $${NOT_A_VAR}\n") == []


def test_the_validate_command_prints_file_line_col_and_exits_non_zero(tmp_path):
    path = write(tmp_path, "hooks:\n  h:\n    organisation: acme\n")
    result = subprocess.run(
        [sys.executable, "-m", "seqbridge", "mappings", "validate", path],
        capture_output=True,
        text=True,
        env={**os.environ},
    )
    assert result.returncode == 1
    assert f"{path}:3:5: unknown key 'organisation' (did you mean 'organization'?)" in result.stdout
    ok = subprocess.run(
        [sys.executable, "-m", "seqbridge", "mappings", "validate", str(ROOT / "mappings")],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "WHATSAPP_APP_SECRET": "s",
            "WHATSAPP_VERIFY_TOKEN": "t",
            "TWILIO_AUTH_TOKEN": "t",
            "TYPEFORM_SECRET": "t",
            "HUBSPOT_CLIENT_SECRET": "t",
            "ACTIVECAMPAIGN_HOOK_TOKEN": "t",
            "ZAPIER_HOOK_TOKEN": "t",
        },
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr


# The engine ------------------------------------------------------------------------------------------


def test_keyword_match_trims_and_case_folds(tmp_path):
    hook = hook_with(
        tmp_path,
        """
        - name: stop
          when: {field: event.payload.text, keyword: [STOP, Unsubscribe]}
          actions: []
    """,
    )
    for text in ("STOP", " stop\n", "unsubscribe", "\tStOp  "):
        assert plan(hook, {"text": text})["rules"] == ["stop"], text
    for text in ("stop now", "please stop", "", None, 5):
        assert plan(hook, {"text": text})["rules"] == [], text


def test_keyword_match_handles_accents_spaces_and_hyphens(tmp_path):
    hook = hook_with(
        tmp_path,
        """
        - name: stop
          when: {field: event.payload.text, keyword: [OPT OUT, OPT-OUT, ARRÊT, STOPP]}
          actions: []
    """,
    )
    # ARRÊT typed composed (U+00CA) or decomposed (E + U+0302), any case; a run of spaces is one.
    for text in (
        "opt out",
        "Opt  Out",
        " OPT\tOUT ",
        "opt-out",
        "Arr\u00eat",
        "ARRE\u0302T",
        "arr\u00cat",
        "stopp",
    ):
        assert plan(hook, {"text": text})["rules"] == ["stop"], text
    for text in ("optout", "opt - out", "arret", "don't opt out", "stop"):
        assert plan(hook, {"text": text})["rules"] == [], text


def test_operators_and_composition(tmp_path):
    hook = hook_with(
        tmp_path,
        """
        - name: big
          when:
            all:
              - {field: event.payload.amount, gte: 100, lt: 1000}
              - any:
                  - {field: event.payload.country, in: [de, fr], ignore_case: true}
                  - {field: event.payload.email, matches: "@vip\\\\.example$", ignore_case: true}
              - not: {field: event.payload.blocked, equals: true}
              - {field: event.payload.tags, contains: paid}
              - {field: event.payload.note, empty: true}
              - {field: event.payload.id, exists: true}
          then: continue
          actions: [{enroll: {sequence: Big, contact: {id: "{{ event.payload.id }}"}}}]
        - name: always
          actions: [{unenroll: {sequence: "*", contact: {id: {path: event.payload.id}}, reason: r}}]
    """,
    )
    good = {"amount": "250", "country": "DE", "blocked": False, "tags": ["paid"], "note": "  ", "id": "c1"}
    event = plan(hook, good)
    assert event["rules"] == ["big", "always"]
    assert [a["action"] for a in event["actions"]] == ["enroll", "unenroll"]
    assert event["actions"][0]["contact"] == {"id": "c1"}
    for change in (
        {"amount": 99},
        {"amount": "lots"},
        {"country": "us"},
        {"blocked": True},
        {"tags": []},
        {"note": "x"},
        {"id": None},
    ):
        assert plan(hook, {**good, **change})["rules"] == ["always"], change
    assert plan(hook, {**good, "country": "us", "email": "Kim@VIP.example"})["rules"] == ["big", "always"]


def test_templates_are_sandboxed_and_bounded(tmp_path):
    for template, reason in (
        ("{{ event.__class__.__mro__ }}", "refused"),
        ("{{ 'a' * 10000000 }}", "refused"),
    ):
        hook = hook_with(
            tmp_path,
            f"""
            - actions: [{{enroll: {{sequence: S, contact: {{id: "{template}"}}}}}}]
        """,
        )
        event = plan(hook, {})
        assert reason in event.get("error", "") or event["actions"][0]["contact"] == {}, event


# Reloads -----------------------------------------------------------------------------------------------


def test_a_reload_keeps_the_last_good_version_of_a_file_that_breaks(tmp_path):
    registry = HookRegistry(str(tmp_path), {}, watch_seconds=0)
    write(tmp_path, BASE + "      - {name: first, actions: []}\n")
    write(tmp_path, BASE.replace("  h:", "  other:") + "      - {name: x, actions: []}\n", "other.yaml")
    registry.reload()
    assert [r.name for r in registry.get("h").rules] == ["first"]
    write(tmp_path, BASE + "      - {name: second, when: {field: 'a[', equals: 1}, actions: []}\n")
    problems = registry.reload()
    assert problems and "JMESPath" in problems[0].message
    assert [r.name for r in registry.get("h").rules] == ["first"]  # the old version still serves
    assert {s["name"]: s["status"] for s in registry.statuses()} == {"h": "stale", "other": "ok"}
    write(tmp_path, BASE + "      - {name: third, actions: []}\n")
    registry.reload()
    assert [r.name for r in registry.get("h").rules] == ["third"]


def test_file_changes_are_picked_up_by_the_watcher(tmp_path):
    registry = HookRegistry(str(tmp_path), {}, watch_seconds=0.01)
    write(tmp_path, BASE + "      - {name: first, actions: []}\n")
    registry.reload()
    path = write(tmp_path, BASE + "      - {name: second, actions: []}\n")
    os.utime(path, ns=(1, 1))  # a different mtime, whatever the filesystem's resolution
    __import__("time").sleep(0.02)
    assert [r.name for r in registry.get("h").rules] == ["second"]


# Tests in mapping files ---------------------------------------------------------------------------------


def test_mapping_tests_report_expected_and_received_with_the_line(tmp_path):
    write(
        tmp_path,
        BASE
        + textwrap.indent(
            textwrap.dedent("""
        - name: enroll
          actions: [{enroll: {sequence: S, contact: {email: {path: event.payload.email}}}}]
    """),
            "      ",
        )
        + textwrap.indent(
            textwrap.dedent("""
        tests:
          - name: right
            body: {email: a@example.com}
            expect: {rules: [enroll], contains: [{action: enroll, contact: {email: a@example.com}}]}
          - name: wrong
            body: {email: a@example.com}
            expect: {actions: [{action: enroll, sequence: T}]}
    """),
            "    ",
        ),
    )
    write(
        tmp_path,
        "tests:\n  h:\n    - name: beside\n      body: {email: b@example.com}\n"
        "      expect: {rules: [nope]}\n",
        "m_test.yaml",
    )
    outcomes, problems = run_tests([str(tmp_path)])
    assert problems == []
    by_name = {o.name: o for o in outcomes}
    assert by_name["right"].passed
    assert not by_name["wrong"].passed and by_name["wrong"].line == 14
    assert "expected" in by_name["wrong"].failures[0] and "received" in by_name["wrong"].failures[0]
    assert not by_name["beside"].passed and by_name["beside"].file.endswith("m_test.yaml")
    result = subprocess.run(
        [sys.executable, "-m", "seqbridge", "mappings", "test", str(tmp_path)], capture_output=True, text=True
    )
    assert result.returncode == 1 and f"FAIL {tmp_path}/m.yaml:14: h: wrong" in result.stdout


def test_every_shipped_mapping_passes_its_tests():
    outcomes, problems = run_tests([str(ROOT / "mappings")])
    assert problems == []
    assert len(outcomes) >= 18 and all(o.passed for o in outcomes), [o for o in outcomes if not o.passed]


# The API --------------------------------------------------------------------------------------------------


def test_dry_run_plans_without_acting_and_mappings_are_per_organization(app_config, api, other_api):
    write(
        Path(app_config["MAPPINGS_DIR"]),
        BASE + "      - {name: go, actions: [{enroll: {sequence: S, "
        "contact: {email: {path: event.payload.email}}}}]}\n",
    )
    answer = api.post("/api/v1/mappings/dry-run", json={"hook": "h", "body": {"email": "a@example.com"}})
    assert answer.status_code == 200, answer.json
    [event] = answer.json["data"]["events"]
    assert event["rules"] == ["go"]
    assert event["actions"] == [
        {"action": "enroll", "target": "local", "sequence": "S", "contact": {"email": "a@example.com"}}
    ]
    assert api.get("/api/v1/deliveries").json["data"] == []  # nothing stored
    assert [m["name"] for m in api.get("/api/v1/mappings").json["data"]] == ["h"]
    assert other_api.get("/api/v1/mappings").json["data"] == []
    hidden = other_api.post("/api/v1/mappings/dry-run", json={"hook": "h", "body": {}})
    assert hidden.status_code == 404 and hidden.json["error"]["code"] == "hook_not_found"


def test_shipped_examples_end_to_end(app_config, api, client, services, monkeypatch, clock):
    """The shipped forms mapping, served for real: a browser form post creates the lead and enrolls
    it into Welcome."""
    import shutil

    from tests.test_hooks import drain

    target = Path(app_config["MAPPINGS_DIR"])
    shutil.copytree(ROOT / "mappings", target, dirs_exist_ok=True)
    for name in (
        "WHATSAPP_APP_SECRET",
        "WHATSAPP_VERIFY_TOKEN",
        "TWILIO_AUTH_TOKEN",
        "TYPEFORM_SECRET",
        "ACTIVECAMPAIGN_HOOK_TOKEN",
        "ZAPIER_HOOK_TOKEN",
        "HUBSPOT_CLIENT_SECRET",
    ):
        monkeypatch.setenv(name, "s3cret")
    monkeypatch.setenv("SEQBRIDGE_DEMO_ORG", "acme")
    welcome = factories.active_sequence(api, name="Welcome")
    posted = client.post(
        "/hooks/signup-form",
        data={"email": " Ada@Example.com ", "first_name": "Ada"},
        headers={"Origin": "http://localhost:8000"},
    )
    assert posted.status_code == 303
    drain(services)
    [contact] = api.get("/api/v1/contacts", query_string={"email": "ada@example.com"}).json["data"]
    assert contact["first_name"] == "Ada" and contact["tags"] == ["lead"]
    enrolled = api.get(f"/api/v1/sequences/{welcome['id']}/enrollments").json["data"]
    assert [e["contact_id"] for e in enrolled] == [contact["id"]]
    zap = client.post(
        "/hooks/zapier",
        json={"action": "unenroll", "email": "ada@example.com", "reason": "converted"},
        headers={"X-Seqbridge-Token": "s3cret"},
    )
    assert zap.status_code == 200 and zap.json["data"]["status"] == "processed"
    assert zap.json["data"]["results"][0]["actions"][0]["outcome"]["status"] == "done"
    enrolled = api.get(f"/api/v1/sequences/{welcome['id']}/enrollments").json["data"]
    assert [(e["status"], e["exit_reason"]) for e in enrolled] == [("exited", "converted")]

    # WhatsApp STOP through the shipped whatsapp hook, signed with the app secret.
    from tests.test_hooks import meta_body, meta_headers

    kim = factories.contact(api, phone="+15551234567")
    api.post(f"/api/v1/sequences/{welcome['id']}/enroll", json={"customer_id": kim["id"]})
    body = meta_body(" Stop ")
    assert client.post("/hooks/whatsapp", data=body, headers=meta_headers(body, "s3cret")).status_code == 202
    # ActiveCampaign "tag added" (vip) through the shipped hook: upsert, then enroll into VIP onboarding.
    vip = factories.active_sequence(api, name="VIP onboarding")
    form = (ROOT / "mappings" / "fixtures" / "activecampaign_tag_added.form").read_bytes()
    tagged = client.post(
        "/hooks/activecampaign?token=s3cret",
        data=form,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert tagged.status_code == 202, tagged.json
    drain(services)
    assert api.get(f"/api/v1/contacts/{kim['id']}").json["data"]["status"] == "unsubscribed"
    kim_enrollments = [
        e
        for e in api.get(f"/api/v1/sequences/{welcome['id']}/enrollments").json["data"]
        if e["contact_id"] == kim["id"]
    ]
    assert [(e["status"], e["exit_reason"]) for e in kim_enrollments] == [("exited", "unsubscribed")]
    [ada] = api.get("/api/v1/contacts", query_string={"email": "ada@example.com"}).json["data"]
    assert "vip" in ada["tags"]
    assert [e["contact_id"] for e in api.get(f"/api/v1/sequences/{vip['id']}/enrollments").json["data"]] == [
        ada["id"]
    ]


@pytest.mark.parametrize("value", ["text", 5, 1.5, True, None, [1, "a"], {"k": "v"}, "", "ünï"])
def test_the_fast_paths_answer_exactly_what_jinja_and_jmespath_answer(value):
    """``{{ a.b }}`` and ``a.b`` skip the template and JMESPath engines; they must not change a result."""
    import jmespath

    from seqbridge.mapping.rules import Template, compile_path, compile_value
    from seqbridge.templating import compile_template

    for ctx in ({"event": {"field": value}}, {"event": {}}, {"event": "not an object"}, {}):
        fast = compile_value("{{ event.field }}", ())
        assert not isinstance(fast, Template)
        assert fast.eval(ctx) == compile_template("{{ event.field }}").render(ctx), ctx
        assert compile_path("event.field", ()).search(ctx) == jmespath.search("event.field", ctx), ctx


def test_a_hook_defined_in_two_files_is_trusted_in_neither(tmp_path):
    registry = HookRegistry(str(tmp_path), {}, watch_seconds=0)
    write(tmp_path, BASE + "      - {name: one, actions: []}\n", "a.yaml")
    write(tmp_path, BASE + "      - {name: two, actions: []}\n", "b.yaml")
    problems = registry.reload()
    assert [p.message for p in problems] == [f"hook 'h' is also defined in {tmp_path / 'a.yaml'}"]
    with pytest.raises(BrokenHook):
        registry.get("h")
    assert [p.message for p in validate_paths([str(tmp_path)], {})] == [problems[0].message]


def test_one_planner_for_stored_deliveries_whether_or_not_their_events_are_stored(tmp_path):
    """plan_delivery plans a stored row's events, or parses them from the stored request when the
    row holds none; both give what a dry run of the same request gives."""
    from seqbridge.mapping.planner import plan_delivery

    hook = hook_with(
        tmp_path,
        """
        - name: welcome
          when: {field: event.payload.email, exists: true}
          actions:
            - enroll: {sequence: Welcome, contact: {email: "{{ event.payload.email }}"}}
        """,
    )
    body = b'{"email": "ada@example.com"}'
    request = InboundRequest("POST", "https://x/hooks/h", {}, {}, body, "application/json")
    [dry] = simulate(hook, request)
    stored = {"dedupe_key": dry["dedupe_key"], "kind": dry["kind"], "data": dry["data"]}
    row = {"method": "POST", "headers": {}, "query": {}, "body": body, "content_type": "application/json"}
    for events in ([stored], None):
        [planned] = plan_delivery(hook, {**row, "events": events}, None)
        assert planned.to_dict() == dry
        assert planned.rules == ("welcome",)
        assert planned.actions[0]["contact"] == {"email": "ada@example.com"}

"""``seqbridge mappings diff``, ``POST /api/v1/mappings/diff`` and ``mappings test --record``:
a mapping change proved against real traffic. The deliveries are real: signed WhatsApp webhooks
through ``/hooks/whatsapp``, stored by the inbox and processed by the worker. The server records
the version it loads; the CLI, another process, compares against it."""

from __future__ import annotations

import hashlib
import json
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import update

from seqbridge.cli import main
from seqbridge.storage.schema import deliveries
from tests import factories
from tests.test_hooks import WHATSAPP_STOP, drain, meta_body, meta_headers

SECRET = "diff-test-app-secret-0042"
HOOK = "# The WhatsApp keywords (a comment the recorder must keep)." + WHATSAPP_STOP.replace(
    "${TEST_WA_SECRET:-meta-app-secret-for-tests}", "${DIFF_WA_SECRET}"
)
#: The traffic: what each sender texted.
TEXTS = {"stop": "STOP", "quit": " quit ", "start": "START", "hello": "hello there", "parar": "PARAR"}
SINCE = "2026-01-01"


@dataclass
class Traffic:
    mapping: Path
    ids: dict[str, str]
    env: dict[str, str]

    def edit(self, old: str, new: str) -> None:
        text = self.mapping.read_text()
        assert old in text, old
        self.mapping.write_text(text.replace(old, new))


@pytest.fixture
def traffic(app_config, api, client, services, monkeypatch) -> Traffic:
    """The hook, and one stored (processed) delivery per text, received through the front door."""
    monkeypatch.setenv("DIFF_WA_SECRET", SECRET)
    mapping = Path(app_config["MAPPINGS_DIR"]) / "whatsapp.yaml"
    mapping.write_text(HOOK)
    ids = {}
    for n, (name, text) in enumerate(TEXTS.items()):
        body = meta_body(text, message_id=f"wamid.{name}", sender=f"1555000{n:04d}")
        answer = client.post("/hooks/whatsapp", data=body, headers=meta_headers(body, SECRET))
        assert answer.status_code == 202, answer.json
        ids[name] = answer.json["data"]["delivery_id"]
    assert drain(services) == len(TEXTS)
    env = {
        "SEQBRIDGE_DATABASE_URL": app_config["DATABASE_URL"],
        "SEQBRIDGE_MAPPINGS_DIR": app_config["MAPPINGS_DIR"],
        "SEQBRIDGE_LOG_LEVEL": "WARNING",
    }
    return Traffic(mapping, ids, env)


def cli(traffic: Traffic, *args: str):
    return CliRunner().invoke(main, list(args), env=traffic.env, catch_exceptions=False)


def diff_json(traffic: Traffic, *args: str) -> dict:
    result = cli(traffic, "mappings", "diff", "--since", SINCE, "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def example(traffic: Traffic, *names: str) -> list[dict[str, str]]:
    return [{"delivery_id": traffic.ids[n], "event": f"wamid.{n}"} for n in names]


def only_hook(report: dict) -> dict:
    [hook] = report["hooks"]
    assert hook["hook"] == "whatsapp"
    return hook


# The server records what it runs -------------------------------------------------------------------


def test_the_server_records_each_version_it_loads_without_the_secrets(traffic, services, api):
    [running] = services.mapping_versions.running().files
    # As written (${DIFF_WA_SECRET} kept), less the secret written in the file; hashed as it is.
    assert running.name == "whatsapp.yaml" and running.sha256 == hashlib.sha256(HOOK.encode()).hexdigest()
    assert running.text == HOOK.replace(
        "verify_token: verify-me", 'verify_token: "${SEQBRIDGE_REDACTED_SECRET}"'
    )
    assert running.hooks == {"whatsapp": "acme"} and running.loaded_at == "2026-01-05T09:00:00Z"
    traffic.edit("OPTOUT]", "OPTOUT, PARAR]")
    api.get("/api/v1/mappings")  # the next request sees the change and reloads
    [edited] = services.mapping_versions.running().files
    assert "PARAR" in edited.text
    traffic.mapping.write_text("hooks: [broken")  # a broken file keeps serving its last good version
    api.get("/api/v1/mappings")
    assert services.mapping_versions.running().files[0].text == edited.text
    with services.db.transaction(write=False) as tx:
        rows = tx.conn.exec_driver_sql("SELECT sha256, source FROM mapping_versions ORDER BY id").fetchall()
    assert len(rows) == 2 and all(SECRET not in source for _, source in rows)
    traffic.mapping.unlink()  # a file that no longer serves is recorded as such
    api.get("/api/v1/mappings")
    with services.db.transaction(write=False) as tx:
        assert tx.mapping_versions.newest_per_file()["whatsapp.yaml"]["sha256"] is None


# What a change does --------------------------------------------------------------------------------


def test_a_new_keyword_reports_exactly_the_event_it_catches_and_its_actions(traffic, services, api):
    other = services.keys.create_key("globex", ["*"], "t").org_id
    factories.delivery(services, other, hook="whatsapp")  # another organization's: never read
    traffic.edit("OPTOUT]", "OPTOUT, PARAR]")
    report = diff_json(traffic)
    hook = only_hook(report)
    assert (hook["change"], hook["deliveries"], hook["events"], hook["changed_events"]) == (
        "changed",
        5,
        5,
        1,
    )
    assert hook["rules"] == [
        {"before": [], "after": ["stop"], "count": 1, "examples": example(traffic, "parar")}
    ]
    phone = "+15550000004"
    assert hook["actions"] == [
        {
            "change": "added",
            "rule": "stop",
            "action": "unenroll",
            "target": "local",
            "count": 1,
            "examples": example(traffic, "parar"),
            "sample": {
                "action": "unenroll",
                "target": "local",
                "sequence": "*",
                "contact": {"phone": phone},
                "reason": "unsubscribed",
            },
        },
        {
            "change": "added",
            "rule": "stop",
            "action": "upsert_contact",
            "target": "local",
            "count": 1,
            "examples": example(traffic, "parar"),
            "sample": {
                "action": "upsert_contact",
                "target": "local",
                "phone": phone,
                "set": {"status": "unsubscribed"},
            },
        },
    ]
    assert hook["errors"] == hook["fixed"] == hook["settings"] == []
    assert report["changed"] is True and report["complete"] is True
    assert report["before"]["source"] == "running" and report["after"]["source"] == "files"
    summary = report["summary"]
    assert [summary[k] for k in ("different_rules", "actions_added", "actions_removed", "new_errors")] == [
        1,
        2,
        0,
        0,
    ]
    # Nothing was executed: the PARAR sender is still nobody's contact.
    assert api.get("/api/v1/contacts", query_string={"phone": phone}).json["data"] == []


def test_a_removed_action_is_reported_for_every_event_that_planned_it(traffic):
    traffic.edit('          - upsert_contact: {phone: "{{ event.from }}", set: {status: unsubscribed}}\n', "")
    hook = only_hook(diff_json(traffic))
    assert hook["changed_events"] == 2 and hook["rules"] == []
    [removed] = hook["actions"]
    assert {k: removed[k] for k in ("change", "rule", "action", "target", "count")} == {
        "change": "removed",
        "rule": "stop",
        "action": "upsert_contact",
        "target": "local",
        "count": 2,
    }
    assert sorted(e["event"] for e in removed["examples"]) == ["wamid.quit", "wamid.stop"]


def test_a_changed_template_is_a_change_of_that_field_only(traffic):
    traffic.edit("reason: unsubscribed}", 'reason: "stop:{{ event.text | trim | lower }}"}')
    hook = only_hook(diff_json(traffic))
    [changed] = hook["actions"]
    assert (changed["change"], changed["rule"], changed["action"], changed["count"]) == (
        "changed",
        "stop",
        "unenroll",
        2,
    )
    [field] = changed["fields"]
    assert field["field"] == "reason" and field["before"] == "unsubscribed"
    assert field["after"] in ("stop:stop", "stop:quit")
    assert hook["rules"] == [] and hook["changed_events"] == 2


def test_events_that_now_fail_to_evaluate_are_reported_with_the_error(traffic):
    traffic.edit(
        "set: {status: active}}", 'set: {status: active, first_name: "{{ (event.text | length) // 0 }}"}}'
    )
    hook = only_hook(diff_json(traffic))
    [error] = hook["errors"]
    assert "failed" in error["error"] and "division" in error["error"]
    assert (error["count"], error["examples"]) == (1, example(traffic, "start"))
    assert hook["actions"] == [] and hook["new_errors"] == 1


def test_deliveries_whose_events_are_not_stored_are_read_by_the_connector(traffic, services):
    """The inbox may leave a delivery's events for the worker to read: the diff reads them the
    same way, once for both versions, and one its connector cannot read is named."""
    unparsed = [traffic.ids["parar"], traffic.ids["hello"]]
    with services.db.transaction() as tx:
        tx.conn.execute(update(deliveries).where(deliveries.c.id.in_(unparsed)).values(events=None))
        start = update(deliveries).where(deliveries.c.id == traffic.ids["start"])
        tx.conn.execute(start.values(events=None, body=b"{oops"))
    traffic.edit("OPTOUT]", "OPTOUT, PARAR]")
    hook = only_hook(diff_json(traffic))
    assert hook["rules"] == [
        {"before": [], "after": ["stop"], "count": 1, "examples": example(traffic, "parar")}
    ]
    assert [(g["change"], g["action"], g["count"]) for g in hook["actions"]] == [
        ("added", "unenroll", 1),
        ("added", "upsert_contact", 1),
    ]
    [unreadable] = hook["unreadable_deliveries"]
    assert unreadable["version"] == "both" and "cannot read the body" in unreadable["error"]
    assert unreadable["examples"] == [{"delivery_id": traffic.ids["start"], "event": ""}]
    assert (hook["deliveries"], hook["events"], hook["unreadable"]) == (5, 4, 1)


# No change, exit codes, validation --------------------------------------------------------------------


def test_an_unchanged_mapping_is_no_change_and_passes_fail_on_change(traffic):
    result = cli(traffic, "mappings", "diff", "--since", SINCE, "--fail-on-change")
    assert result.exit_code == 0, result.output
    assert result.output.rstrip().splitlines()[-1].startswith("no change: 1 hook(s)")
    assert "identical source, not replayed" in result.output
    traffic.edit("# The WhatsApp keywords", "# The WhatsApp keywords, reworded")  # replayed, plans the same
    report = diff_json(traffic, "--fail-on-change")
    assert (only_hook(report)["change"], only_hook(report)["events"], report["changed"]) == (
        "unchanged",
        5,
        False,
    )


def test_fail_on_change_exits_1_and_the_text_says_what_changed(traffic):
    traffic.edit("OPTOUT]", "OPTOUT, PARAR]")
    result = cli(traffic, "mappings", "diff", "--since", SINCE, "--fail-on-change")
    assert result.exit_code == 1
    assert "whatsapp: changed" in result.output
    assert "(no rule) -> stop" in result.output and traffic.ids["parar"] in result.output
    assert "actions +2 -0 ~0" in result.output
    assert cli(traffic, "mappings", "diff", "--since", SINCE).exit_code == 0  # without the flag: 0


def test_an_invalid_mapping_answers_exactly_like_validate(traffic):
    traffic.edit("keyword: [START", "keywrd: [START")
    validate = cli(traffic, "mappings", "validate")
    result = cli(traffic, "mappings", "diff", "--since", SINCE, "--fail-on-change")
    assert (result.exit_code, result.output) == (validate.exit_code, validate.output)
    assert result.exit_code == 1 and "whatsapp.yaml:16:" in result.output
    machine = cli(traffic, "mappings", "diff", "--json")
    assert json.loads(machine.stdout)["error"]["code"] == "mapping_invalid" and machine.exit_code == 1


def test_without_a_recorded_version_the_diff_asks_for_one(tmp_path, database_url):
    mappings = tmp_path / "m"
    mappings.mkdir()
    (mappings / "x.yaml").write_text(HOOK)
    env = {"SEQBRIDGE_DATABASE_URL": database_url, "DIFF_WA_SECRET": SECRET}
    result = CliRunner().invoke(main, ["mappings", "diff", str(mappings)], env=env)
    assert result.exit_code == 2 and "--before-rev" in result.output
    ok = CliRunner().invoke(main, ["mappings", "diff", str(mappings), "--before-dir", str(mappings)], env=env)
    assert ok.exit_code == 0 and "no change" in ok.output


def test_the_before_can_be_a_git_revision_or_a_directory(traffic, tmp_path):
    repo = Path(traffic.mapping.parent)
    git = ["git", "-C", str(repo), "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "whatsapp.yaml"], check=True)
    subprocess.run([*git, "commit", "-qm", "mapping"], check=True)
    copy = tmp_path / "before"
    copy.mkdir()
    (copy / "whatsapp.yaml").write_text(HOOK)
    traffic.edit("OPTOUT]", "OPTOUT, PARAR]")
    running = diff_json(traffic)
    for option in (["--before-rev", "HEAD"], ["--before-dir", str(copy)]):
        report = diff_json(traffic, str(repo), *option)
        assert report["hooks"] == running["hooks"], option
    assert diff_json(traffic, str(repo), "--before-rev", "HEAD")["before"]["source"] == "git"
    bad = cli(traffic, "mappings", "diff", str(repo), "--before-rev", "no-such-rev")
    assert bad.exit_code == 2 and "no-such-rev" in bad.output


# The API -------------------------------------------------------------------------------------------


def test_the_api_answers_what_the_cli_answers_and_only_for_the_callers_hooks(
    traffic, api, other_api, make_key
):
    changed = HOOK.replace("OPTOUT]", "OPTOUT, PARAR]")
    answer = api.post("/api/v1/mappings/diff", json={"mapping": changed, "since": SINCE, "limit": 100000})
    assert answer.status_code == 200, answer.json
    traffic.edit("OPTOUT]", "OPTOUT, PARAR]")
    from_cli = diff_json(traffic)
    from_api = answer.json["data"]
    assert from_api["after"]["files"][-1]["sha256"] == from_cli["after"]["files"][0]["sha256"]
    assert {k: v for k, v in from_api.items() if k != "after"} == {
        k: v for k, v in from_cli.items() if k != "after"
    }
    # Another organization's hook is not found, exactly as the dry run answers.
    for body in ({"mapping": changed, "since": SINCE}, {"mapping": changed, "hook": "whatsapp"}):
        hidden = other_api.post("/api/v1/mappings/diff", json=body)
        assert (hidden.status_code, hidden.json["error"]["code"]) == (404, "hook_not_found")
    dry = other_api.post("/api/v1/mappings/dry-run", json={"hook": "whatsapp", "body": {}})
    assert (dry.status_code, dry.json["error"]["code"]) == (404, "hook_not_found")
    reader = api.with_key(make_key("acme", ["hooks:read"]))
    assert reader.post("/api/v1/mappings/diff", json={"mapping": changed}).status_code == 200
    denied = api.with_key(make_key("acme", ["contacts:read"])).post(
        "/api/v1/mappings/diff", json={"mapping": changed}
    )
    assert (denied.status_code, denied.json["error"]["code"]) == (403, "hooks_read_denied")


def test_the_api_answers_a_bad_mapping_with_its_problems_and_never_shows_the_environment(traffic, api):
    broken = api.post(
        "/api/v1/mappings/diff", json={"mapping": "hooks:\n  whatsapp: [oops\n", "file": "whatsapp.yaml"}
    )
    assert (broken.status_code, broken.json["error"]["code"]) == (422, "mapping_invalid")
    [problem] = broken.json["error"]["details"]["problems"]
    assert problem["file"] == "whatsapp.yaml" and problem["line"] == 3 and "YAML" in problem["message"]
    leaky = HOOK.replace("reason: unsubscribed}", 'reason: "${DIFF_WA_SECRET}"}')
    refused = api.post("/api/v1/mappings/diff", json={"mapping": leaky, "since": SINCE})
    assert (refused.status_code, refused.json["error"]["code"]) == (422, "mapping_invalid")
    assert SECRET not in json.dumps(refused.json)
    assert (
        "only in organization, source and targets"
        in refused.json["error"]["details"]["problems"][0]["message"]
    )
    for since in ("yesterday", "99x"):
        bad = api.post("/api/v1/mappings/diff", json={"mapping": HOOK, "since": since})
        assert (bad.status_code, bad.json["error"]["code"]) == (400, "invalid_since")


# Golden tests from production ----------------------------------------------------------------------------


def test_record_turns_a_delivery_into_a_case_that_passes_then_fails_once_the_rule_changes(traffic):
    tests = traffic.mapping.with_name("whatsapp_test.yaml")
    tests.write_text(
        "# Hand-written cases first.\ntests:\n  whatsapp:\n    - name: hello does nothing  # a comment\n"
        "      body_file: fixtures/hello.json\n      expect: {rules: [null]}\n"
    )
    (traffic.mapping.parent / "fixtures").mkdir()
    (traffic.mapping.parent / "fixtures" / "hello.json").write_bytes(meta_body("hello"))
    recorded = cli(
        traffic, "mappings", "test", "--record", traffic.ids["quit"], "--name", "a QUIT from production"
    )
    assert recorded.exit_code == 0, recorded.output
    assert (
        "PASS whatsapp: a QUIT from production" in recorded.output and "2 passed, 0 failed" in recorded.output
    )
    text = tests.read_text()
    assert "# Hand-written cases first." in text and "# a comment" in text  # the file's own content is kept
    fixture = traffic.mapping.parent / "fixtures" / f"whatsapp-{traffic.ids['quit']}.json"
    assert fixture.read_bytes() == meta_body(" quit ", message_id="wamid.quit", sender="15550000001")
    assert SECRET not in text and "signature" not in text.lower()  # no secret, no signature header
    assert "action: unenroll" in text and "reason: unsubscribed" in text
    again = cli(traffic, "mappings", "test", "--record", traffic.ids["quit"])
    assert again.exit_code == 1 and "already a test" in again.output
    traffic.edit("reason: unsubscribed}", "reason: stopped}")
    failing = cli(traffic, "mappings", "test")
    assert failing.exit_code == 1 and "FAIL" in failing.output and "a QUIT from production" in failing.output


def test_record_creates_the_test_file_and_leaves_secrets_out_of_fixtures(traffic, services):
    headers = {
        "x-hub-signature-256": "[REDACTED]",
        "x-custom": "kept",
        "x-relay": f"via {SECRET}",
        "webhook-timestamp": "1",
    }
    with services.db.transaction() as tx:  # headers as a sender and a proxy might add them
        tx.conn.execute(
            update(deliveries).where(deliveries.c.id == traffic.ids["stop"]).values(headers=headers)
        )
    result = cli(traffic, "mappings", "test", "--record", traffic.ids["stop"])
    assert result.exit_code == 0, result.output
    text = traffic.mapping.with_name("whatsapp_test.yaml").read_text()
    assert "x-custom: kept" in text and SECRET not in text and "x-hub-signature" not in text
    assert "webhook-timestamp" not in text and "x-relay" not in text


def test_secrets_written_in_a_file_are_blanked_out_of_its_recorded_copy():
    from seqbridge.mapping.sources import blank_secrets

    text = textwrap.dedent("""\
        targets:
          crm: {type: sequences_api, base_url: "https://crm.example.com", api_key: crm-key-123}
        hooks:
          form: &form
            organization: acme
            source:
              connector: standard_webhooks
              secrets: [whsec_b2xkLXNlY3JldC0xMjM0, "${NEW_SECRET}"]
              token: |
                block-token-456
            rules:
              - name: keep
                when: {field: event.token, equals: not-a-setting-789}
                actions: []
          copy:
            <<: *form
        """)
    blanked = blank_secrets(text)
    for secret in ("crm-key-123", "whsec_b2xkLXNlY3JldC0xMjM0", "block-token-456"):
        assert secret in text and secret not in blanked
    assert "${NEW_SECRET}" in blanked and "not-a-setting-789" in blanked  # references and rules stay
    assert blank_secrets("hooks: [unreadable") is None


# The pieces ------------------------------------------------------------------------------------------

LOWCODE = Path(__file__).resolve().parent.parent / "mappings" / "lowcode.yaml"


def _hook(tmp_path: Path, text: str, name: str):
    from seqbridge.mapping.registry import load_all
    from seqbridge.mapping.testing import PlaceholderEnvironment

    path = tmp_path / f"{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(text)
    [result] = load_all([str(path)], PlaceholderEnvironment()).results
    assert result.ok, result.problems
    return result.hooks[name]


def test_planning_two_versions_at_once_plans_what_each_plans_alone(tmp_path):
    """plan_versions shares the request's parsing and the unchanged rules' evaluation between the
    versions; the plans are exactly plan_delivery's, rule by action included."""
    from connectors.base import InboundRequest
    from seqbridge.mapping.planner import plan_delivery, plan_versions

    text = LOWCODE.read_text()
    before = _hook(tmp_path, text, "zapier")
    after = _hook(
        tmp_path,
        text.replace("|| 'unenrolled'", "|| 'left'").replace(
            "when: {field: event.payload.action, equals: bulk_enroll}",
            "when: [{field: event.payload.action, equals: bulk_enroll}, {field: body.sequence, exists: true}]",
        ),
        "zapier",
    )
    assert "body" in after.reads and "body" not in before.reads
    payloads = [
        {"action": "enroll", "sequence": "Welcome", "email": "a@example.com"},
        {"action": "unenroll", "email": "b@example.com"},
        {"action": "bulk_enroll", "emails": ["c@x.co"]},
        {"action": "bulk_enroll", "sequence": "Welcome", "emails": ["d@x.co"]},
        {"action": "dance"},
    ]
    for payload in payloads:
        raw = json.dumps(payload).encode()
        request = InboundRequest("POST", "", {}, {}, raw, "application/json")
        events = [
            {"dedupe_key": e.dedupe_key, "kind": e.kind, "data": e.data}
            for e in before.connector.parse(request)
        ]
        row = {"events": events, "body": raw, "content_type": "application/json", "headers": {}, "query": {}}
        alone = [plan_delivery(hook, row, "2026-01-05T09:00:00Z") for hook in (before, after)]
        assert plan_versions([before, after], row, "2026-01-05T09:00:00Z") == alone, payload
        assert plan_versions([None, after], row, None) == [None, alone[1]]
    assert [e.actions for e in alone[0]] == [()]  # "dance" matches nothing in either


@pytest.mark.parametrize(
    ("expression", "roots"),
    [
        ("event.text", {"event"}),
        ('body.contact.email || headers."x-email"', {"body", "headers"}),
        ('"\\u0062ody".email', {"body"}),
        ("sort_by(event.items, &price)[0].name", {"event"}),
        ("[event.a, {q: query.x}]", {"event", "query"}),
        ("event.items[?price > `3`].name | [0]", {"event"}),
        ("@", None),
        ("*.email", None),
        ("length(@)", None),
        ('`"literal"`', set()),
    ],
)
def test_what_a_field_can_read(expression, roots):
    from seqbridge.mapping.rules import path_roots

    assert path_roots(expression) == (None if roots is None else frozenset(roots))


def test_what_a_template_and_a_hook_can_read(tmp_path):
    from seqbridge.mapping.planner import request_parts
    from seqbridge.mapping.rules import template_roots

    assert template_roots("{{ event.from }}") == {"event"}
    assert template_roots("{% for k in headers %}{{ k }}{{ body.x | lower }}{% endfor %}") == {
        "headers",
        "body",
    }
    assert template_roots("{% set x = 1 %}{{ x }}") == frozenset()
    whatsapp = _hook(tmp_path, HOOK.replace("${DIFF_WA_SECRET}", "s"), "whatsapp")
    assert whatsapp.reads == {"event"} and request_parts([whatsapp, None]) == frozenset()
    zapier = _hook(tmp_path, LOWCODE.read_text(), "zapier")
    assert zapier.reads == {"event"}
    anything = _hook(tmp_path, HOOK.replace("field: event.text", 'field: "@.event.text"'), "whatsapp")
    assert anything.reads is None and request_parts([whatsapp, anything]) == {"body", "headers", "query"}

"""bulk_enroll by filter in a mapping: checked when the file is validated, refused as a failed
outcome (never an exception) when a computed filter turns out wrong, and enrolled end to end."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from datetime import UTC, datetime

from standardwebhooks import Webhook

from seqbridge.mapping.registry import validate_paths
from tests.factories import bulk_contacts, org_id
from tests.test_hooks import drain, write_mapping
from tests.test_mappings import write

SECRET = "whsec_" + base64.b64encode(b"f" * 24).decode()

WRONG_AXIS = """
hooks:
  h:
    organization: acme
    source: {connector: generic, public: true}
    rules:
      - actions:
          - bulk_enroll:
              queue: Webinar follow-up
              filter: {city: Lisbon, industry: tech}
"""

HOOK = f"""
hooks:
  crm:
    organization: acme
    source: {{connector: standard_webhooks, secret: "{SECRET}"}}
    respond: after_actions
    rules:
      - name: by city
        when: {{field: event.payload.city, exists: true}}
        actions:
          - bulk_enroll: {{queue: Webinar follow-up, filter: {{city: "{{{{ event.payload.city }}}}"}}}}
      - name: by industry
        when: {{field: event.payload.industry, exists: true}}
        actions:
          - bulk_enroll: {{queue: Webinar follow-up, customer_filter: {{industry: "{{{{ event.payload.industry }}}}"}}}}
      - name: computed
        when: {{field: event.payload.filter, exists: true}}
        actions:
          - bulk_enroll: {{queue: Webinar follow-up, filter: {{path: event.payload.filter}}}}
"""


def _queue(api, name="Webinar follow-up"):
    queue = api.post("/api/v1/event-queues", json={"name": name}).json["data"]
    step = {"action_type": "send_email", "delay_days": 1, "action_config": {"subject": "Hi", "body": "Hi"}}
    assert api.post(f"/api/v1/event-queues/{queue['id']}/steps", json=step).status_code == 201
    return queue


def _send(client, payload: dict, msg_id: str):
    body = json.dumps({"type": "segment.changed", **payload})
    now = datetime.now(UTC)
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(SECRET).sign(msg_id, now, body),
        "Content-Type": "application/json",
    }
    return client.post("/hooks/crm", data=body, headers=headers)


def test_validate_reports_a_wrong_axis_filter_at_its_line(tmp_path):
    path = write(tmp_path, WRONG_AXIS)
    [problem] = validate_paths([path], {})
    assert (problem.line, problem.col) == (9, 38)
    assert problem.message == (
        "bulk_enroll filter: industry is a company/customer field: filter on it with customer_filter, not filter"
    )
    result = subprocess.run(
        [sys.executable, "-m", "seqbridge", "mappings", "validate", path],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert f"{path}:9:38: bulk_enroll filter: industry is a company/customer field" in result.stdout


def test_validate_refuses_unknown_fields_and_values_a_filter_cannot_take(tmp_path):
    text = WRONG_AXIS.replace("{city: Lisbon, industry: tech}", "{citty: Lisbon, country: {a: b}}")
    messages = [p.message for p in validate_paths([write(tmp_path, text)], {})]
    assert any("unknown field citty" in m for m in messages), messages
    assert any("country" in m and "a string, a boolean or a list of them" in m for m in messages), messages


def test_a_signed_webhook_enrolls_every_contact_a_filter_matches(app_config, api, client, services, clock):
    write_mapping(app_config, HOOK)
    queue = _queue(api)
    org = org_id(api)
    lisbon = bulk_contacts(services, org, 620, clock.now(), prefix="lx", city="Lisbon")
    bulk_contacts(services, org, 5, clock.now(), prefix="op", city="Porto")
    bulk_contacts(services, org, 3, clock.now(), prefix="un", city="Lisbon", status="unsubscribed")
    answer = _send(client, {"city": "Lisbon"}, "msg_city_1")
    assert answer.status_code == 200, answer.json
    assert answer.json["data"]["status"] == "processed"
    [event] = answer.json["data"]["results"]
    outcome = event["actions"][0]["outcome"]
    assert outcome["status"] == "done" and outcome["sequence_id"] == queue["id"]
    assert (outcome["enrolled"], outcome["skipped"]) == (620, 3)
    tasks, cursor = [], ""
    while True:
        page = api.get(f"/api/v1/event-queues/{queue['id']}/enrollments?limit=200{cursor}").json
        tasks += page["data"]
        if not page["meta"]["next_cursor"]:
            break
        cursor = f"&cursor={page['meta']['next_cursor']}"
    assert sorted(t["contact_id"] for t in tasks) == sorted(c["id"] for c in lisbon)
    again = _send(client, {"city": "Lisbon"}, "msg_city_2").json["data"]["results"][0]["actions"][0][
        "outcome"
    ]
    assert (again["enrolled"], again["already_enrolled"]) == (0, 620)


def test_customer_filter_enrolls_the_contacts_of_matching_companies(app_config, api, client):
    write_mapping(app_config, HOOK)
    queue = _queue(api)
    mining = api.post("/api/v1/companies", json={"name": "Dig", "industry": "mining"}).json["data"]
    retail = api.post("/api/v1/companies", json={"name": "Shop", "industry": "retail"}).json["data"]
    digger = api.post("/api/v1/contacts", json={"email": "d@example.com", "company_id": mining["id"]}).json[
        "data"
    ]
    api.post("/api/v1/contacts", json={"email": "s@example.com", "company_id": retail["id"]})
    outcome = _send(client, {"industry": "mining"}, "msg_ind_1").json["data"]["results"][0]["actions"][0][
        "outcome"
    ]
    assert (outcome["status"], outcome["enrolled"]) == ("done", 1)
    tasks = api.get(f"/api/v1/event-queues/{queue['id']}/enrollments").json["data"]
    assert [t["contact_id"] for t in tasks] == [digger["id"]]


def test_validate_checks_customer_filter_and_one_mode(tmp_path):
    text = WRONG_AXIS.replace("filter: {city: Lisbon, industry: tech}", "customer_filter: {job_title: CTO}")
    [problem] = validate_paths([write(tmp_path, text)], {})
    assert (
        "bulk_enroll customer_filter: job_title is a contact field: filter on it with filter"
        in problem.message
    )
    both = WRONG_AXIS.replace("filter: {city: Lisbon, industry: tech}", "{filter: {}, customer_filter: {}}")
    both = both.replace(
        "bulk_enroll:\n              queue: Webinar follow-up\n              {", "bulk_enroll: {queue: Q, "
    )
    messages = [p.message for p in validate_paths([write(tmp_path, both)], {})]
    assert any("exactly one of contacts, filter or customer_filter" in m for m in messages), messages


def test_a_computed_filter_on_the_wrong_axis_fails_the_action_and_is_not_retried(
    app_config, api, client, services
):
    write_mapping(app_config, HOOK)
    _queue(api)
    answer = _send(client, {"filter": {"industry": "tech"}}, "msg_axis_1")
    assert answer.status_code == 200, answer.json
    data = answer.json["data"]
    assert data["status"] == "failed"
    outcome = data["results"][0]["actions"][0]["outcome"]
    assert outcome["status"] == "failed" and outcome["code"] == "wrong_filter_axis"
    assert "industry is a company/customer field" in outcome["message"]
    bad_value = _send(client, {"filter": {"city": {"nested": 1}}}, "msg_axis_2").json["data"]
    assert bad_value["results"][0]["actions"][0]["outcome"]["code"] == "invalid_filter"
    assert drain(services) == 0  # nothing left to retry
    delivery = api.get(f"/api/v1/deliveries/{data['delivery_id']}").json["data"]
    assert delivery["status"] == "failed" and delivery["attempts"] == 1

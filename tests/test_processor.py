"""The step processor, driven by a manual clock, against real SQLite/PostgreSQL, a real SMTP
server (aiosmtpd) and a real HTTP receiver on loopback."""

from __future__ import annotations

import json
import random
import socket
from datetime import UTC, datetime, timedelta
from email import message_from_bytes

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook

from seqbridge.storage.schema import step_tasks
from seqbridge.worker.channels import message_id
from seqbridge.worker.processor import StepProcessor
from tests.factories import active_sequence, contact
from tests.loopback import LoopbackServer, QuietHandler

SECRET = "whsec_" + "c2VjcmV0LXNpZ25pbmcta2V5LWZvci10ZXN0cy0xMjM0"


def _processor(services, **settings) -> StepProcessor:
    services.settings.update({"WEBHOOK_SECRET": SECRET, "ALLOW_PRIVATE_TARGETS": True, **settings})
    return StepProcessor(services, rng=random.Random(7))


def _run(processor) -> int:
    return processor.run_once("test-worker")


def _enrollment(api, sequence_id, enrollment_id):
    return api.get(f"/api/v1/sequences/{sequence_id}/enrollments/{enrollment_id}").json["data"]


def _outbox(api):
    return api.get("/api/v1/outbox?limit=200").json["data"]


def _z(moment):
    return moment.isoformat().replace("+00:00", "Z")


def _tasks(services, enrollment_id):
    with services.db.engine.connect() as conn:
        query = (
            select(step_tasks).where(step_tasks.c.enrollment_id == enrollment_id).order_by(step_tasks.c.id)
        )
        return [dict(r) for r in conn.execute(query).mappings()]


# The schedule --------------------------------------------------------------------------------------


def test_steps_are_sent_on_schedule_into_the_outbox_and_the_enrollment_completes(api, services, clock):
    sequence = active_sequence(
        api,
        steps=(
            {"delay_days": 0, "subject": "Hi {{ first_name }}", "body": "Welcome, {{ first_name }}!"},
            {"delay_days": 2, "subject": "Day 2", "body": "Still there?"},
        ),
        from_email="team@example.com",
        from_name="Team",
        reply_to_email="reply@example.com",
    )
    person = contact(api, email="ada@example.com", first_name="Ada")
    enrollment = api.post(
        f"/api/v1/sequences/{sequence['id']}/enroll", json={"contact_id": person["id"]}
    ).json["data"]
    processor = _processor(services)
    assert _run(processor) == 1
    [first] = _outbox(api)
    assert first["status"] == "captured" and first["channel"] == "email"
    assert (first["recipient"], first["subject"], first["body"].strip()) == (
        "ada@example.com",
        "Hi Ada",
        "Welcome, Ada!",
    )
    assert first["headers"]["From"] == "Team <team@example.com>"
    assert first["headers"]["Reply-To"] == "reply@example.com"
    assert first["headers"]["Message-ID"] == message_id(first["idempotency_key"])
    assert first["headers"]["List-Unsubscribe"] == "<mailto:reply@example.com?subject=unsubscribe>"
    after_first = _enrollment(api, sequence["id"], enrollment["id"])
    assert after_first["next_send_at"] == _z(clock.now() + timedelta(days=2))
    assert _run(processor) == 0  # nothing due yet
    clock.advance(days=2)
    assert _run(processor) == 1
    done = _enrollment(api, sequence["id"], enrollment["id"])
    assert done["status"] == "completed" and done["next_send_at"] is None
    assert [m["subject"] for m in _outbox(api)] == ["Day 2", "Hi Ada"]
    assert api.get(f"/api/v1/sequences/{sequence['id']}").json["data"]["total_completed"] == 1
    completed = api.get("/api/v1/audit-events?tag=worker:enrollment:completed").json["data"][0]
    assert completed["actor"] == {"type": "worker", "id": "test-worker"}
    counts = api.client.get("/readyz").json["data"]["processor"]
    assert counts["captured"] == 2 and counts["due"] == 0 and counts["leased"] == 0


def test_the_next_delay_counts_from_the_actual_send(api, services, clock):
    sequence = active_sequence(api, steps=({"delay_days": 0}, {"delay_minutes": 30}))
    person = contact(api)
    enrollment = api.post(
        f"/api/v1/sequences/{sequence['id']}/enroll", json={"contact_id": person["id"]}
    ).json["data"]
    clock.advance(hours=5)  # the worker was down for five hours
    processor = _processor(services)
    _run(processor)
    assert _enrollment(api, sequence["id"], enrollment["id"])["next_send_at"] == _z(
        clock.now() + timedelta(minutes=30)
    )


def test_a_paused_sequence_holds_its_enrollments_and_resumes_them(api, services, clock):
    sequence = active_sequence(api, steps=({"delay_days": 0},))
    person = contact(api)
    api.post(f"/api/v1/sequences/{sequence['id']}/enroll", json={"contact_id": person["id"]})
    api.patch(f"/api/v1/sequences/{sequence['id']}", json={"status": "paused"})
    processor = _processor(services)
    assert _run(processor) == 0 and _outbox(api) == []
    assert api.client.get("/readyz").json["data"]["processor"]["due"] == 1
    api.patch(f"/api/v1/sequences/{sequence['id']}", json={"status": "archived"})
    assert _run(processor) == 0
    api.patch(f"/api/v1/sequences/{sequence['id']}", json={"status": "active"})
    assert _run(processor) == 1 and len(_outbox(api)) == 1


def test_a_paused_enrollment_is_held(api, services, clock):
    sequence = active_sequence(api, steps=({"delay_days": 1},))
    person = contact(api)
    enrollment = api.post(
        f"/api/v1/sequences/{sequence['id']}/enroll", json={"contact_id": person["id"]}
    ).json["data"]
    api.patch(f"/api/v1/sequences/{sequence['id']}/enrollments/{enrollment['id']}", json={"status": "paused"})
    clock.advance(days=3)
    processor = _processor(services)
    assert _run(processor) == 0
    api.patch(f"/api/v1/sequences/{sequence['id']}/enrollments/{enrollment['id']}", json={"status": "active"})
    clock.advance(days=1)
    assert _run(processor) == 1


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"status": "unsubscribed"}, "unsubscribed"),
        ({"status": "bounced"}, "bounced"),
        ({"converted": True}, "converted"),
    ],
)
def test_a_contact_who_unsubscribes_between_steps_exits_instead_of_being_sent_to(
    api, services, clock, fields, reason
):
    sequence = active_sequence(api, steps=({"delay_days": 0}, {"delay_days": 1}))
    person = contact(api)
    enrollment = api.post(
        f"/api/v1/sequences/{sequence['id']}/enroll", json={"contact_id": person["id"]}
    ).json["data"]
    processor = _processor(services)
    _run(processor)
    api.patch(f"/api/v1/contacts/{person['id']}", json=fields)
    clock.advance(days=1)
    _run(processor)
    after = _enrollment(api, sequence["id"], enrollment["id"])
    assert (after["status"], after["exit_reason"]) == ("exited", reason)
    assert len(_outbox(api)) == 1  # only the first step went out
    assert [t["status"] for t in _tasks(services, enrollment["id"])] == ["done", "cancelled"]


def test_queue_steps_run_their_actions(api, services, clock):
    queue = api.post("/api/v1/event-queues", json={"name": "Q"}).json["data"]
    for step in (
        {"action_type": "add_tag", "action_config": {"tag": "onboarded"}},
        {
            "action_type": "update_contact",
            "delay_minutes": 5,
            "delay_from": "enrollment",
            "action_config": {"fields": {"city": "Lisbon", "id": "nope"}},
        },
    ):
        api.post(f"/api/v1/event-queues/{queue['id']}/steps", json=step)
    person = contact(api)
    api.post(f"/api/v1/event-queues/{queue['id']}/bulk-enroll", json={"contact_ids": [person["id"]]})
    processor = _processor(services)
    _run(processor)
    assert api.get(f"/api/v1/contacts/{person['id']}").json["data"]["tags"] == ["onboarded"]
    clock.advance(minutes=5)
    _run(processor)
    updated = api.get(f"/api/v1/contacts/{person['id']}").json["data"]
    assert updated["city"] == "Lisbon" and updated["id"] == person["id"]
    tasks = api.get(f"/api/v1/event-queues/{queue['id']}/enrollments").json["data"]
    assert [t["status"] for t in tasks] == ["completed", "completed"]


# Email over real SMTP -------------------------------------------------------------------------------


class _Inbox:
    def __init__(self, answers=None):
        self.messages: list[bytes] = []
        self.answers = list(answers or [])

    async def handle_DATA(self, server, session, envelope):
        if self.answers:
            return self.answers.pop(0)
        self.messages.append(envelope.content)
        return "250 OK queued"


@pytest.fixture
def smtp_server():
    servers = []

    def start(answers=None):
        inbox = _Inbox(answers)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        controller = Controller(inbox, hostname="127.0.0.1", port=port)
        controller.start()
        servers.append(controller)
        return inbox, f"smtp://127.0.0.1:{port}?starttls=never"

    yield start
    for controller in servers:
        controller.stop()


def test_email_over_a_real_smtp_server(api, services, clock, smtp_server):
    inbox, url = smtp_server()
    sequence = active_sequence(
        api,
        steps=({"delay_days": 0, "subject": "Hello {{ first_name }}", "body": "Body for {{ email }}"},),
        from_email="sales@example.com",
        from_name="Sales",
    )
    person = contact(api, email="grace@example.com", first_name="Grace")
    api.post(f"/api/v1/sequences/{sequence['id']}/enroll", json={"contact_id": person["id"]})
    _run(_processor(services, SMTP_URL=url))
    [raw] = inbox.messages
    message = message_from_bytes(raw)
    assert message["To"] == "grace@example.com"
    assert message["From"] == "Sales <sales@example.com>"
    assert message["Subject"] == "Hello Grace"
    assert message["List-Unsubscribe"] == "<mailto:sales@example.com?subject=unsubscribe>"
    assert message.get_payload().strip() == "Body for grace@example.com"
    [sent] = _outbox(api)
    assert sent["status"] == "sent" and message["Message-ID"] == message_id(sent["idempotency_key"])


def test_smtp_4xx_is_retried_with_backoff_and_5xx_fails_at_once(api, services, clock, smtp_server):
    inbox, url = smtp_server(answers=["451 4.3.0 try again later", "451 4.3.0 still busy"])
    sequence = active_sequence(api, steps=({"delay_days": 0},))
    person = contact(api)
    enrollment = api.post(
        f"/api/v1/sequences/{sequence['id']}/enroll", json={"contact_id": person["id"]}
    ).json["data"]
    processor = _processor(services, SMTP_URL=url, RETRY_BASE_SECONDS=60)
    start = clock.now()
    _run(processor)
    [task] = _tasks(services, enrollment["id"])
    assert task["status"] == "pending" and task["attempts"] == 1 and "451" in task["last_error"]
    assert (
        start + timedelta(seconds=48) <= task["scheduled_for"] <= start + timedelta(seconds=72)
    )  # 60 s ±20%
    clock.set(task["scheduled_for"])
    _run(processor)
    [task] = _tasks(services, enrollment["id"])
    assert task["attempts"] == 2
    assert (
        clock.now() + timedelta(seconds=96) <= task["scheduled_for"] <= clock.now() + timedelta(seconds=144)
    )  # 120 s ±20%
    clock.set(task["scheduled_for"])
    _run(processor)
    assert (
        len(inbox.messages) == 1
        and _enrollment(api, sequence["id"], enrollment["id"])["status"] == "completed"
    )

    rejecting, bad_url = smtp_server(answers=["550 5.1.1 no such user"])
    assert rejecting.messages == []
    other = active_sequence(api, name="Other", steps=({"delay_days": 0},))
    failing = api.post(
        f"/api/v1/sequences/{other['id']}/enroll", json={"contact_id": contact(api)["id"]}
    ).json["data"]
    _run(_processor(services, SMTP_URL=bad_url))
    failed = _enrollment(api, other["id"], failing["id"])
    assert failed["status"] == "failed" and "550" in failed["last_error"]
    assert [t["status"] for t in _tasks(services, failing["id"])] == ["failed"]
    assert api.get("/api/v1/outbox?status=failed").json["data"][0]["detail"].startswith("SMTP 550")


# Webhooks -------------------------------------------------------------------------------------------


@pytest.fixture
def receiver():
    """A loopback HTTP server that verifies Standard Webhooks signatures with the standardwebhooks package."""
    state = {"answers": [], "received": [], "verified": []}

    class Handler(QuietHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            headers = {k.lower(): v for k, v in self.headers.items()}
            state["received"].append((headers, body))
            state["verified"].append(Webhook(SECRET).verify(body, headers))
            status, extra = state["answers"].pop(0) if state["answers"] else (200, {})
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()

    with LoopbackServer(Handler) as server:
        state["url"] = server.url + "/hook"
        yield state


def test_webhook_steps_are_signed_with_standard_webhooks(api, services, clock, receiver):
    sequence = active_sequence(
        api, steps=({"channel": "webhook", "webhook_url": receiver["url"], "delay_days": 0},)
    )
    person = contact(api, email="hook@example.com", first_name="Hook")
    enrollment = api.post(
        f"/api/v1/sequences/{sequence['id']}/enroll",
        json={"contact_id": person["id"], "enrollment_data": {"plan": "pro"}},
    ).json["data"]
    _run(_processor(services))
    [(headers, body)] = receiver["received"]
    [event] = receiver["verified"]  # verify() raised nothing: the signature holds
    assert event["type"] == "sequence.step"
    assert event["data"]["contact"]["email"] == "hook@example.com"
    assert event["data"]["enrollment"] == {"id": enrollment["id"], "data": {"plan": "pro"}}
    [sent] = _outbox(api)
    assert headers["webhook-id"] == sent["idempotency_key"] == event["id"]
    assert sent["status"] == "sent" and sent["detail"] == "HTTP 200"
    tampered = json.dumps({**json.loads(body), "type": "x"}).encode()
    with pytest.raises(Exception):  # noqa: B017 - any verification error
        Webhook(SECRET).verify(tampered, headers)


def test_429_retry_after_is_honoured_and_503_retried_until_the_limit(api, services, clock, receiver):
    receiver["answers"] = [(429, {"Retry-After": "120"}), (503, {}), (503, {})]
    sequence = active_sequence(
        api, steps=({"channel": "webhook", "webhook_url": receiver["url"], "delay_days": 0},)
    )
    enrollment = api.post(
        f"/api/v1/sequences/{sequence['id']}/enroll", json={"contact_id": contact(api)["id"]}
    ).json["data"]
    processor = _processor(services, PROCESSOR_MAX_ATTEMPTS=3)
    start = clock.now()
    _run(processor)
    [task] = _tasks(services, enrollment["id"])
    assert task["scheduled_for"] == start + timedelta(seconds=120) and task["last_error"] == "HTTP 429"
    clock.set(task["scheduled_for"])
    _run(processor)
    clock.set(_tasks(services, enrollment["id"])[0]["scheduled_for"])
    _run(processor)
    failed = _enrollment(api, sequence["id"], enrollment["id"])
    assert failed["status"] == "failed" and "gave up after 3 attempts: HTTP 503" in failed["last_error"]
    assert len(receiver["received"]) == 3


def test_4xx_fails_at_once_and_private_targets_are_refused_by_default(api, services, clock, receiver):
    receiver["answers"] = [(404, {})]
    sequence = active_sequence(
        api, steps=({"channel": "webhook", "webhook_url": receiver["url"], "delay_days": 0},)
    )
    first = api.post(
        f"/api/v1/sequences/{sequence['id']}/enroll", json={"contact_id": contact(api)["id"]}
    ).json["data"]
    _run(_processor(services))
    assert _enrollment(api, sequence["id"], first["id"])["last_error"] == "HTTP 404"
    second = api.post(
        f"/api/v1/sequences/{sequence['id']}/enroll", json={"contact_id": contact(api)["id"]}
    ).json["data"]
    _run(_processor(services, ALLOW_PRIVATE_TARGETS=False))
    refused = _enrollment(api, sequence["id"], second["id"])
    assert refused["status"] == "failed" and "private address" in refused["last_error"]
    assert len(receiver["received"]) == 1


def test_backoff_is_exponential_with_jitter_and_capped(services):
    processor = _processor(services, RETRY_BASE_SECONDS=30, RETRY_MAX_SECONDS=600)
    delays = [processor.backoff(n) for n in range(1, 8)]
    for attempt, delay in enumerate(delays, start=1):
        expected = min(600, 30 * 2 ** (attempt - 1))
        assert 0.8 * expected <= delay <= 1.2 * expected
    assert processor.backoff(3, retry_after=7) == 7


# Send windows -------------------------------------------------------------------------------------


def test_a_step_due_on_friday_evening_waits_for_monday_morning(api, services, clock):
    window = {
        "days": ["mon", "tue", "wed", "thu", "fri"],
        "start": "09:00",
        "end": "17:00",
        "timezone": "Europe/Berlin",
    }
    clock.set(datetime(2026, 3, 6, 15, 59, tzinfo=UTC))  # Friday 16:59 in Berlin (UTC+1)
    sequence = active_sequence(api, steps=({"delay_days": 0}, {"delay_minutes": 5}), send_window=window)
    enrollment = api.post(
        f"/api/v1/sequences/{sequence['id']}/enroll", json={"contact_id": contact(api)["id"]}
    ).json["data"]
    processor = _processor(services)
    assert _run(processor) == 1  # inside the window
    clock.advance(minutes=5)  # 17:04 Friday: closed
    _run(processor)
    [_, second] = _tasks(services, enrollment["id"])
    assert second["status"] == "pending" and second["attempts"] == 0
    assert second["scheduled_for"] == datetime(2026, 3, 9, 8, 0, tzinfo=UTC)  # Monday 09:00 Berlin
    clock.set(second["scheduled_for"])
    assert _run(processor) == 1
    assert _enrollment(api, sequence["id"], enrollment["id"])["status"] == "completed"


def test_a_window_in_the_contacts_time_zone(api, services, clock):
    window = {"start": "09:00", "end": "17:00", "timezone": "contact", "fallback_timezone": "Europe/London"}
    clock.set(datetime(2026, 7, 1, 12, 0, tzinfo=UTC))  # 08:00 in New York, 13:00 in London
    sequence = active_sequence(api, steps=({"delay_days": 0},), send_window=window)
    new_yorker = contact(api, timezone="America/New_York")
    londoner = contact(api)  # no zone: the fallback
    ny = api.post(f"/api/v1/sequences/{sequence['id']}/enroll", json={"contact_id": new_yorker["id"]}).json[
        "data"
    ]
    api.post(f"/api/v1/sequences/{sequence['id']}/enroll", json={"contact_id": londoner["id"]})
    assert _run(_processor(services)) == 2
    assert [m["recipient"] for m in _outbox(api)] == [londoner["email"]]
    assert _tasks(services, ny["id"])[0]["scheduled_for"] == datetime(
        2026, 7, 1, 13, 0, tzinfo=UTC
    )  # 09:00 EDT


def test_smtp_urls_are_parsed_with_credentials_and_tls_modes():
    from seqbridge.worker.channels import SmtpSettings

    plain = SmtpSettings.parse("smtp://user%40x.com:p%40ss@mail.example.com:2525?starttls=require")
    assert (plain.host, plain.port, plain.user, plain.password, plain.implicit_tls, plain.starttls) == (
        "mail.example.com",
        2525,
        "user@x.com",
        "p@ss",
        False,
        "require",
    )
    implicit = SmtpSettings.parse("smtps://mail.example.com")
    assert (implicit.port, implicit.implicit_tls) == (465, True)
    assert SmtpSettings.parse("smtp://mail.example.com").port == 587
    assert SmtpSettings.parse("") is None
    with pytest.raises(ValueError, match="SEQBRIDGE_SMTP_URL"):
        SmtpSettings.parse("http://mail.example.com")


@pytest.mark.parametrize(
    ("window", "path"),
    [
        ({"start": "17:00", "end": "09:00"}, "$.send_window.end"),
        ({"timezone": "Mars/Base"}, "$.send_window.timezone"),
        ({"days": ["funday"]}, "$.send_window.days[0]"),
    ],
)
def test_send_windows_are_validated(api, window, path):
    response = api.post("/api/v1/sequences", json={"name": "W", "send_window": window})
    assert response.status_code == 400
    assert response.json["error"]["details"]["errors"][0]["path"] == path

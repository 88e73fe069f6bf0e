"""Remote targets: the same rules acting on a backend over HTTP, for each dialect, against the
hosted backend served on loopback; outcomes under scripted faults; chunking and idempotency."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta

import pytest
from werkzeug.serving import make_server

from seqbridge.storage.schema import enrollments
from tests import factories
from tests.conftest import Api
from tests.loopback import LoopbackServer, QuietHandler
from tests.test_hooks import drain, write_mapping

pytestmark = pytest.mark.slow


class Recorder:
    """WSGI middleware: remembers each request's method, path and Idempotency-Key."""

    def __init__(self, app) -> None:
        self.app, self.calls = app, []

    def __call__(self, environ, start_response):
        self.calls.append(
            (environ["REQUEST_METHOD"], environ["PATH_INFO"], environ.get("HTTP_IDEMPOTENCY_KEY"))
        )
        return self.app(environ, start_response)


@pytest.fixture
def hosted(app):
    """The hosted backend itself on a real HTTP server: the remote end of every remote target."""
    recorder = Recorder(app)
    http = make_server("127.0.0.1", 0, recorder, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{http.server_port}", recorder
    http.shutdown()


@pytest.fixture
def remote(client, make_key) -> Api:
    """The organization the remote targets act on (another tenant of the hosted backend)."""
    return Api(client, make_key("remote", ["*"]))


def mapping(name: str, target: str, actions: str) -> str:
    return f"""
  {name}:
    organization: acme
    source: {{connector: generic, public: true}}
    rules:
      - name: go
        actions:
{actions.replace("TARGET", target)}
"""


def targets_block(base_url: str, key: str) -> str:
    return "targets:\n" + "".join(
        f'  {kind}: {{type: {kind}, base_url: "{base_url}", api_key: "{key}", allow_private: true, '
        "timeout_seconds: 5}\n"
        for kind in ("sequences_api", "bot_sequences_api", "event_queues_api")
    )


def emails_enrolled(api, path: str) -> set[str]:
    people = {
        c["id"]: c["email"] for c in api.get("/api/v1/contacts", query_string={"limit": 100}).json["data"]
    }
    rows = api.get(path, query_string={"limit": 100}).json["data"]
    return {(people[r["contact_id"]], r["status"], r.get("exit_reason")) for r in rows}


def test_the_sequences_dialect_remote_matches_local(
    app_config, api, remote, client, services, hosted, make_key
):
    base_url, _ = hosted
    local_seq = factories.active_sequence(api, name="Welcome")
    remote_seq = factories.active_sequence(remote, name="Welcome")
    for person in ("a", "b", "c"):
        factories.contact(api, email=f"{person}@example.com")
        factories.contact(remote, email=f"{person}@example.com")
    actions = """          - {target: TARGET, enroll: {sequence: "SEQ", contact: {email: {path: event.payload.email}}}}
          - {target: TARGET, bulk_enroll: {sequence: "SEQ", contacts: {path: event.payload.more}}}
          - {target: TARGET, unenroll: {sequence: "SEQ", contact: {email: {path: event.payload.leaver}}, reason: converted}}"""
    remote_key = make_key("remote", ["sequences:write", "contacts:read"])  # the least the dialect needs
    write_mapping(
        app_config,
        targets_block(base_url, remote_key)
        + "hooks:"
        + mapping("local-h", "local", actions.replace("SEQ", local_seq["id"]))
        + mapping("remote-h", "sequences_api", actions.replace("SEQ", remote_seq["id"])),
    )
    payload = {
        "email": "a@example.com",
        "more": ["b@example.com", "c@example.com"],
        "leaver": "b@example.com",
    }
    for hook in ("local-h", "remote-h"):
        assert client.post(f"/hooks/{hook}", json=payload).status_code == 202
    drain(services)
    statuses = {d["hook"]: d["status"] for d in api.get("/api/v1/deliveries").json["data"]}
    assert statuses == {"local-h": "processed", "remote-h": "processed"}
    local = emails_enrolled(api, f"/api/v1/sequences/{local_seq['id']}/enrollments")
    assert local == {
        ("a@example.com", "active", None),
        ("b@example.com", "exited", "converted"),
        ("c@example.com", "active", None),
    }
    assert emails_enrolled(remote, f"/api/v1/sequences/{remote_seq['id']}/enrollments") == local
    remote_delivery = next(d for d in api.get("/api/v1/deliveries").json["data"] if d["hook"] == "remote-h")
    detail = api.get(f"/api/v1/deliveries/{remote_delivery['id']}").json["data"]
    assert [a["outcome"]["status"] for a in detail["results"][0]["actions"]] == ["done", "done", "done"]
    assert remote_key not in json.dumps(detail)  # the API key never shows


def test_the_bot_and_event_queue_dialects_remote_match_local(
    app_config, api, remote, client, services, hosted
):
    base_url, _ = hosted
    local_seq = factories.active_sequence(api, name="Bot")
    remote_seq = factories.active_sequence(remote, name="Bot")
    local_queue = api.post("/api/v1/event-queues", json={"name": "Q"}).json["data"]
    remote_queue = remote.post("/api/v1/event-queues", json={"name": "Q"}).json["data"]
    for who, queue in ((api, local_queue), (remote, remote_queue)):
        who.post(
            f"/api/v1/event-queues/{queue['id']}/steps",
            json={"action_type": "add_tag", "action_config": {"tag": "q"}, "delay_days": 2},
        )
    local_people = {e: factories.contact(api, email=e)["id"] for e in ("x@example.com", "y@example.com")}
    remote_people = {e: factories.contact(remote, email=e)["id"] for e in ("x@example.com", "y@example.com")}
    bot = (
        """          - {target: TARGET, enroll: {sequence: "SEQ", contact: {id: {path: event.payload.id}}}}"""
    )
    queue = """          - {target: TARGET, bulk_enroll: {queue: "QUEUE", contacts: {path: event.payload.emails}}}"""
    key = remote.key
    write_mapping(
        app_config,
        targets_block(base_url, key)
        + "hooks:"
        + mapping("local-bot", "local", bot.replace("SEQ", local_seq["id"]))
        + mapping("remote-bot", "bot_sequences_api", bot.replace("SEQ", remote_seq["id"]))
        + mapping("local-q", "local", queue.replace("QUEUE", local_queue["id"]))
        + mapping("remote-q", "event_queues_api", queue.replace("QUEUE", remote_queue["id"])),
    )
    client.post("/hooks/local-bot", json={"id": local_people["x@example.com"]})
    client.post("/hooks/remote-bot", json={"id": remote_people["x@example.com"]})
    for hook in ("local-q", "remote-q"):
        client.post(f"/hooks/{hook}", json={"emails": ["x@example.com", "y@example.com"]})
    drain(services)
    assert {d["status"] for d in api.get("/api/v1/deliveries").json["data"]} == {"processed"}
    local = emails_enrolled(api, f"/api/v1/sequences/{local_seq['id']}/enrollments")
    assert local == {("x@example.com", "active", None)}
    assert emails_enrolled(remote, f"/api/v1/sequences/{remote_seq['id']}/enrollments") == local
    local_q = emails_enrolled(api, f"/api/v1/event-queues/{local_queue['id']}/enrollments")
    assert len(local_q) == 2
    assert emails_enrolled(remote, f"/api/v1/event-queues/{remote_queue['id']}/enrollments") == local_q


def test_the_validator_refuses_what_a_dialect_cannot_do(tmp_path):
    from seqbridge.mapping.registry import validate_paths

    path = tmp_path / "m.yaml"
    path.write_text(
        targets_block("https://crm.example.com", "k")
        + "hooks:"
        + mapping(
            "h", "event_queues_api", "          - {target: TARGET, unenroll: {queue: Q, contact: {id: c}}}"
        )
        + mapping(
            "g", "sequences_api", '          - {target: TARGET, unenroll: {sequence: "*", contact: {id: c}}}'
        )
    )
    problems = [str(p) for p in validate_paths([str(path)], {})]
    assert any(
        "(event_queues_api) cannot unenroll: the event-queue dialect has no unenroll" in p for p in problems
    )
    assert any('unenroll from "*" works on the local target only' in p for p in problems)
    bad = tmp_path / "bad.yaml"
    bad.write_text("targets:\n  crm: {type: sequences_api, base_url: ftp://x, api_key: k}\nhooks: {}\n")
    assert any("base_url must be an http(s) URL" in str(p) for p in validate_paths([str(bad)], {}))


# Faults: a scripted server -------------------------------------------------------------------------


class Script:
    def __init__(self) -> None:
        self.answers: list[tuple[int, dict, dict | None, float]] = []
        self.requests: list[tuple[str, str, str | None]] = []


@pytest.fixture
def scripted():
    script = Script()

    class Handler(QuietHandler):
        def _answer(self):
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            script.requests.append((self.command, self.path, self.headers.get("Idempotency-Key")))
            status, headers, body, delay = script.answers.pop(0) if script.answers else (500, {}, None, 0)
            time.sleep(delay)
            payload = json.dumps(body or {}).encode()
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass

        do_POST = do_GET = do_DELETE = _answer

    with LoopbackServer(Handler) as server:
        yield server.url, script


def fault_mapping(app_config, base_url: str, extra: str = "") -> None:
    write_mapping(
        app_config,
        f"""
targets:
  crm: {{type: sequences_api, base_url: "{base_url}", api_key: "crm-secret-key", allow_private: true,
         timeout_seconds: 0.5{extra}}}
hooks:
  h:
    organization: acme
    source: {{connector: generic, public: true}}
    rules:
      - actions: [{{target: crm, enroll: {{sequence: seq_1, contact: {{email: {{path: event.payload.email}}}}}}}}]
""",
    )


def enrolled_201() -> tuple:
    return 201, {}, {"data": {"id": "enr_1"}}, 0


def only_delivery(api) -> dict:
    [delivery] = api.get("/api/v1/deliveries").json["data"]
    return api.get(f"/api/v1/deliveries/{delivery['id']}").json["data"]


def test_503_twice_then_201_is_retried_with_the_same_key_and_done(
    app_config, api, client, services, clock, scripted
):
    base_url, script = scripted
    fault_mapping(app_config, base_url)
    script.answers = [(503, {}, None, 0), (503, {}, None, 0), enrolled_201()]
    client.post("/hooks/h", json={"email": "a@example.com"})
    for _ in range(3):
        drain(services)
        clock.advance(timedelta(hours=1))
    detail = only_delivery(api)
    assert detail["status"] == "processed" and detail["attempts"] == 3
    assert detail["results"][0]["actions"][0]["outcome"] == {"status": "done", "enrollment_id": "enr_1"}
    assert [r[2] for r in script.requests] == [script.requests[0][2]] * 3 and script.requests[0][2]
    assert [e["error"] for e in detail["errors"]] == [
        "crm: POST /api/v1/sequences/seq_1/enroll answered 503"
    ] * 2


def test_429_retry_after_is_honoured(app_config, api, client, services, clock, scripted):
    base_url, script = scripted
    fault_mapping(app_config, base_url)
    script.answers = [(429, {"Retry-After": "600"}, None, 0), enrolled_201()]
    client.post("/hooks/h", json={"email": "a@example.com"})
    drain(services)
    detail = only_delivery(api)
    due = datetime.fromisoformat(detail["next_attempt_at"].replace("Z", "+00:00"))
    assert detail["status"] == "queued" and (due - clock.now()).total_seconds() >= 600
    clock.advance(timedelta(seconds=300))
    assert drain(services) == 0  # not before the server said
    clock.advance(timedelta(seconds=301))
    drain(services)
    assert only_delivery(api)["status"] == "processed"


def test_a_timeout_is_retried(app_config, api, client, services, clock, scripted):
    base_url, script = scripted
    fault_mapping(app_config, base_url)
    script.answers = [(201, {}, {"data": {"id": "late"}}, 1.5), enrolled_201()]
    client.post("/hooks/h", json={"email": "a@example.com"})
    drain(services)
    detail = only_delivery(api)
    assert detail["status"] == "queued" and "timed out" in detail["errors"][0]["error"]
    clock.advance(timedelta(hours=1))
    drain(services)
    assert only_delivery(api)["status"] == "processed"
    assert script.requests[0][2] == script.requests[1][2]  # the same key: the remote can drop the repeat


@pytest.mark.parametrize(
    ("answer", "status", "outcome"),
    [
        (
            (409, {}, {"error": {"code": "already_enrolled", "message": "Already enrolled"}}, 0),
            "processed",
            {"status": "skipped", "code": "already_enrolled"},
        ),
        (
            (
                422,
                {},
                {
                    "error": {
                        "code": "ineligible",
                        "message": "no",
                        "details": {"reason": "contact_status:unsubscribed"},
                    }
                },
                0,
            ),
            "processed",
            {"status": "skipped", "reason": "contact_status:unsubscribed"},
        ),
        (
            (401, {}, {"error": {"code": "invalid_api_key", "message": "bad"}}, 0),
            "failed",
            {"status": "failed", "code": "unauthorized"},
        ),
        (
            (404, {}, {"error": {"code": "not_found", "message": "No sequence seq_1"}}, 0),
            "failed",
            {"status": "failed", "code": "not_found"},
        ),
    ],
    ids=["409", "422", "401", "404"],
)
def test_remote_answers_become_outcomes(app_config, api, client, services, scripted, answer, status, outcome):
    base_url, script = scripted
    fault_mapping(app_config, base_url)
    script.answers = [answer]
    client.post("/hooks/h", json={"email": "a@example.com"})
    drain(services)
    detail = only_delivery(api)
    assert detail["status"] == status and len(script.requests) == 1  # never retried
    got = detail["results"][0]["actions"][0]["outcome"]
    assert {k: got.get(k) for k in outcome} == outcome
    if answer[0] == 401:
        assert "api_key" in got["message"] and "crm-secret-key" not in json.dumps(detail)


# Chunking -------------------------------------------------------------------------------------------


def test_2500_emails_are_3_enroll_bulk_calls_and_5_bulk_enroll_calls_and_a_retried_chunk_enrolls_once(
    app_config, api, remote, client, services, hosted, clock
):
    base_url, recorder = hosted
    remote_org = factories.org_id(remote)
    people = factories.bulk_contacts(services, remote_org, 2500, clock.now(), prefix="chunk")
    emails = [p["email"] for p in people]
    sequence = factories.active_sequence(remote, name="Big")
    queue = remote.post("/api/v1/event-queues", json={"name": "BigQ"}).json["data"]
    remote.post(
        f"/api/v1/event-queues/{queue['id']}/steps",
        json={"action_type": "add_tag", "action_config": {"tag": "q"}, "delay_days": 2},
    )
    write_mapping(
        app_config,
        targets_block(base_url, remote.key)
        + "hooks:"
        + mapping(
            "bulk",
            "sequences_api",
            f"""\
          - {{target: sequences_api, bulk_enroll: {{sequence: "{sequence["id"]}", contacts: {{path: event.payload.emails}}}}}}
          - {{target: event_queues_api, bulk_enroll: {{queue: "{queue["id"]}", contacts: {{path: event.payload.emails}}}}}}""",
        ),
    )
    client.post("/hooks/bulk", json={"emails": emails})
    drain(services)
    detail = only_delivery(api)
    assert detail["status"] == "processed", [a["outcome"] for a in detail["results"][0]["actions"]]
    outcomes = [a["outcome"] for a in detail["results"][0]["actions"]]
    assert outcomes[0]["enrolled"] == 2500 and outcomes[1]["enrolled"] == 2500
    bulk = [c for c in recorder.calls if c[1].endswith("/enroll_bulk")]
    queue_calls = [c for c in recorder.calls if c[1].endswith("/bulk-enroll")]
    assert len(bulk) == 3 and len(queue_calls) == 5
    keys = [c[2] for c in bulk + queue_calls]
    assert all(keys) and len(set(keys)) == 8  # each chunk its own key

    # A retried chunk (the same key again, as after a timeout) enrolls no one twice.
    hook = services.inbox.registry.get("bulk")
    action = {
        "action": "bulk_enroll",
        "target": "sequences_api",
        "sequence": sequence["id"],
        "contacts": emails,
    }
    key = bulk[0][2].rsplit(":chunk", 1)[0]
    again = hook.targets["sequences_api"].client.run(action, key)
    assert again["status"] == "done" and again["enrolled"] == 2500  # the kept answers, replayed
    with services.db.engine.connect() as conn:
        count = conn.execute(
            enrollments.select().where(enrollments.c.sequence_id == sequence["id"])
        ).fetchall()
    assert len(count) == 2500


def test_a_target_that_stays_down_makes_the_delivery_dead_after_its_own_limit_then_replay_works(
    app_config, api, client, services, clock, scripted
):
    base_url, script = scripted
    fault_mapping(app_config, base_url, ", max_attempts: 2")
    script.answers = [(503, {}, None, 0), (503, {}, None, 0), (503, {}, None, 0)]
    client.post("/hooks/h", json={"email": "a@example.com"})
    for _ in range(3):
        drain(services)
        clock.advance(timedelta(hours=1))
    detail = only_delivery(api)
    assert detail["status"] == "dead" and detail["attempts"] == 2 and len(script.requests) == 2, (
        detail["attempts"],
        detail["errors"],
    )
    script.answers = [enrolled_201()]  # the target is back
    assert api.post(f"/api/v1/deliveries/{detail['id']}/replay").status_code == 202
    drain(services)
    assert only_delivery(api)["status"] == "processed"
    assert script.requests[-1][2] != script.requests[0][2]  # an operator's replay acts again: a new key

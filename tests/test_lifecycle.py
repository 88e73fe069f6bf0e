"""The enrollment state machine (services/lifecycle.py): every status change goes through one
function, which refuses a move its table does not hold, on SQLite and PostgreSQL."""

from __future__ import annotations

import random

from seqbridge.context import Actor, ActorType, Caller
from seqbridge.jobs import Failed
from seqbridge.services.contacts import ContactRef
from seqbridge.services.lifecycle import LIVE, MOVES, EnrollmentStatus, IllegalMove, move
from seqbridge.worker.processor import StepProcessor
from tests.factories import active_sequence, contact, org_id


def _enroll(api, sequence, **fields):
    person = contact(api, **fields)
    response = api.post(f"/api/v1/sequences/{sequence['id']}/enroll", json={"contact_id": person["id"]})
    assert response.status_code == 201, response.json
    return response.json["data"]


def _enrollment_events(api, enrollment_id):
    response = api.get(f"/api/v1/audit-events?order=asc&subject_id={enrollment_id}")
    assert response.status_code == 200, response.json
    return [e["tag"] for e in response.json["data"]]


def test_resuming_a_completed_enrollment_is_refused_with_the_api_error_and_changes_nothing(api, services):
    sequence = active_sequence(api, steps=({"delay_days": 0},))
    enrollment = _enroll(api, sequence)
    assert StepProcessor(services, rng=random.Random(1)).run_once("w1") == 1  # its one step: done
    url = f"/api/v1/sequences/{sequence['id']}/enrollments/{enrollment['id']}"
    completed = api.get(url).json["data"]
    assert completed["status"] == "completed" and completed["completed_at"] is not None

    for status in ("active", "paused"):
        refused = api.patch(url, json={"status": status})
        assert refused.status_code == 409
        assert refused.json["error"]["code"] == "enrollment_ended"
        assert refused.json["error"]["details"] == {"status": "completed"}
        assert f"cannot be {status}" in refused.json["error"]["message"]
    # Exiting one that has ended answers it as it is (DELETE is idempotent), and moves nothing.
    assert api.delete(url + "?reason=manual").json["data"]["status"] == "completed"
    assert api.get(url).json["data"] == completed
    assert _enrollment_events(api, enrollment["id"]) == [
        "api:enrollment:created",
        "worker:enrollment:completed",
    ]


def test_move_holds_exactly_the_table_of_moves_and_refuses_the_rest_before_writing(api, services, clock):
    """Every (from, to) pair: the table's moves happen (one audit event each), the others raise
    and leave the enrollment and the audit log as they were."""
    sequence = active_sequence(api, steps=({"delay_days": 2}, {"delay_days": 1}))
    caller = Caller(org_id(api), Actor(ActorType.WORKER, "test"))
    for before in EnrollmentStatus:
        for to in EnrollmentStatus:
            enrollment = _enroll(api, sequence)
            with services.db.transaction() as tx:
                tx.enrollments.update_enrollment(enrollment["id"], {"status": before.value})
            with services.db.transaction() as tx:
                row = tx.enrollments.get_enrollment(caller.org_id, enrollment["id"])
            allowed = (before, to) in MOVES
            try:
                with services.db.transaction() as tx:
                    move(tx, caller, [row], to, clock.now(), reason="manual", scheduler=services.scheduler)
            except IllegalMove as refused:
                assert not allowed, (before, to)
                expected = "invalid_transition" if before in LIVE else "enrollment_ended"
                assert refused.code == expected and refused.status == 409
                with services.db.transaction() as tx:
                    assert tx.enrollments.get_enrollment(caller.org_id, enrollment["id"]) == row
                assert _enrollment_events(api, enrollment["id"]) == ["api:enrollment:created"]
                continue
            assert allowed, (before, to)
            with services.db.transaction() as tx:
                after = tx.enrollments.get_enrollment(caller.org_id, enrollment["id"])
                open_tasks = tx.enrollments.open_tasks(enrollment["id"])
            assert after["status"] == to.value
            if to in (EnrollmentStatus.EXITED, EnrollmentStatus.COMPLETED, EnrollmentStatus.FAILED):
                assert open_tasks == [] and after["next_send_at"] is None
            tag = f"worker:enrollment:{MOVES[(before, to)]}"
            assert _enrollment_events(api, enrollment["id"]) == ["api:enrollment:created", tag]


def test_a_step_that_fails_after_its_enrollment_was_exited_leaves_it_exited(api, services):
    """The worker's settle reads the enrollment as it is now: an exit made through the API while
    the step was on the wire is not overwritten by the step's failure."""
    sequence = active_sequence(api, steps=({"delay_days": 0},))
    enrollment = _enroll(api, sequence)
    job = StepProcessor(services, rng=random.Random(1)).job
    [claimed] = job.claim("w1")
    url = f"/api/v1/sequences/{sequence['id']}/enrollments/{enrollment['id']}"
    assert api.delete(url + "?reason=replied").json["data"]["status"] == "exited"
    job.settle("w1", [(claimed, Failed("550 mailbox unavailable"))])
    after = api.get(url).json["data"]
    assert (after["status"], after["exit_reason"]) == ("exited", "replied")
    assert _enrollment_events(api, enrollment["id"]) == ["api:enrollment:created", "api:enrollment:exited"]


def test_unsubscribing_everywhere_moves_every_live_enrollment_once(api, services):
    """A contact in one sequence (active) and another (paused) leaves both, one event each."""
    first = active_sequence(api, name="One")
    second = active_sequence(api, name="Two")
    person = contact(api, phone="+14155550100")
    ids = []
    for sequence in (first, second):
        response = api.post(f"/api/v1/sequences/{sequence['id']}/enroll", json={"contact_id": person["id"]})
        ids.append(response.json["data"]["id"])
    api.patch(f"/api/v1/sequences/{second['id']}/enrollments/{ids[1]}", json={"status": "paused"})
    caller = Caller(org_id(api), Actor(ActorType.HOOK, "sms"))
    ended = services.enrollment.unenroll_everywhere(
        caller, ContactRef("phone", "+14155550100"), reason="unsubscribed"
    )
    assert sorted(e["id"] for e in ended) == sorted(ids)
    for sequence, enrollment_id, was in zip((first, second), ids, ("active", "paused"), strict=True):
        after = api.get(f"/api/v1/sequences/{sequence['id']}/enrollments/{enrollment_id}").json["data"]
        assert (after["status"], after["exit_reason"], after["next_send_at"]) == (
            "exited",
            "unsubscribed",
            None,
        )
        tags = _enrollment_events(api, enrollment_id)
        assert tags[-1] == "hook:enrollment:exited" and tags.count("hook:enrollment:exited") == 1, (was, tags)

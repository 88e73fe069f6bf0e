"""Replay by filter (``hooks:write`` to start or cancel, ``hooks:read`` to watch): a job the
worker runs, so a replay covers everything the filter matches, not the page on screen."""

from __future__ import annotations

from flask import Blueprint

from seqbridge.web.envelope import body, caller, ok, page, query, time_param
from seqbridge.web.pipeline import services

bp = Blueprint("replay_jobs", __name__, url_prefix="/api/v1/deliveries/replay")


@bp.post("")
def start_replay_job():
    given = body() or {}
    jobs = services().replay_jobs
    flt = jobs.make_filter(
        given.get("hook"), given.get("status"), time_param(given.get("since")), time_param(given.get("until"))
    )
    job = jobs.create(caller(), flt)
    response, status = ok(job, 202)
    response.headers["Location"] = f"/api/v1/deliveries/replay/{job['id']}"
    return response, status


@bp.get("")
def list_replay_jobs():
    q = query()
    return page(services().replay_jobs.list(caller(), cursor=q.get("cursor"), limit=q["limit"]))


@bp.get("/<job_id>")
def get_replay_job(job_id: str):
    return ok(services().replay_jobs.get(caller(), job_id))


@bp.post("/<job_id>/cancel")
def cancel_replay_job(job_id: str):
    return ok(services().replay_jobs.cancel(caller(), job_id))

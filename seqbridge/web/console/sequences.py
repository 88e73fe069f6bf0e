"""Sequences and event queues: lists with counts, steps in order, enrollments by status, and the
operator's actions (activate / pause a sequence; pause, resume, unenroll an enrollment)."""

from __future__ import annotations

from flask import redirect, render_template, request, url_for

from seqbridge.errors import BadRequest
from seqbridge.services.enrollment import EnrollmentStatus
from seqbridge.services.sequences import SequenceKind
from seqbridge.web.console import bp
from seqbridge.web.console.session import caller, require
from seqbridge.web.pipeline import services

PAGE = 50
#: URL segment → (kind, the scope area of its API dialect)
KINDS = {
    "sequences": (SequenceKind.SEQUENCE, "sequences"),
    "queues": (SequenceKind.EVENT_QUEUE, "automations"),
}


def _kind(section: str) -> tuple[SequenceKind, str]:
    if section not in KINDS:
        raise BadRequest("No such section.", code="not_found")
    return KINDS[section]


def _offset() -> int:
    try:
        return max(0, int(request.args.get("offset", 0)))
    except ValueError:
        return 0


@bp.get("/<any(sequences, queues):section>")
def sequence_list(section: str):
    kind, area = _kind(section)
    require(f"{area}:read")
    status = request.args.get("status") or None
    page = services().sequences.list_sequences(caller(), kind, status, PAGE, _offset(), with_steps=False)
    return render_template(
        "console/sequences.html", section=section, kind=kind, area=area, page=page, status=status
    )


@bp.get("/<any(sequences, queues):section>/<sequence_id>")
def sequence_detail(section: str, sequence_id: str):
    kind, area = _kind(section)
    require(f"{area}:read")
    sequence = services().sequences.get_sequence(caller(), kind, sequence_id)
    status = request.args.get("status") or None
    if status is not None and status not in EnrollmentStatus.__members__.values():
        raise BadRequest(f"Unknown enrollment status {status!r}.", code="invalid_status")
    counts = services().activity.enrollment_counts(caller(), kind, sequence_id)
    enrollments = services().enrollment.list_enrollments(caller(), kind, sequence_id, status, PAGE, _offset())
    return render_template(
        "console/sequence.html",
        section=section,
        kind=kind,
        area=area,
        s=sequence,
        counts=counts,
        enrollments=enrollments,
        status=status,
        statuses=list(EnrollmentStatus),
    )


@bp.post("/<any(sequences, queues):section>/<sequence_id>/status")
def sequence_status(section: str, sequence_id: str):
    kind, area = _kind(section)
    require(f"{area}:write")
    status = request.form.get("status")
    if status not in ("active", "paused"):
        raise BadRequest("A sequence can be set active or paused here.", code="invalid_status")
    services().sequences.update_sequence(caller(), kind, sequence_id, {"status": status})
    return redirect(url_for("console.sequence_detail", section=section, sequence_id=sequence_id), 303)


@bp.post(
    "/<any(sequences, queues):section>/<sequence_id>/enrollments/<enrollment_id>/<any(pause, resume, unenroll):action>"
)
def enrollment_action(section: str, sequence_id: str, enrollment_id: str, action: str):
    kind, area = _kind(section)
    require(f"{area}:write")
    if action == "unenroll":
        services().enrollment.exit(caller(), kind, sequence_id, enrollment_id, reason="manual")
    else:
        status = "paused" if action == "pause" else "active"
        services().enrollment.set_status(caller(), kind, sequence_id, enrollment_id, status)
    back = request.form.get("back") or ""
    if back.startswith("/") and not back.startswith("//"):
        return redirect(back, 303)
    return redirect(url_for("console.sequence_detail", section=section, sequence_id=sequence_id), 303)

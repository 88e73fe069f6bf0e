"""The audit log: what happened, who did it, when and why.

Events are appended in the same transaction as the change they describe, so either both are
stored or neither. Each event carries the SHA-256 of its predecessor in the same organization;
:func:`verify_chain` detects any edited, deleted or reordered event.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from seqbridge.context import ActorType, Caller
from seqbridge.storage.bulk import RawJSON

if TYPE_CHECKING:
    from seqbridge.storage.db import Database
    from seqbridge.storage.tx import Tx


#: Which subjects each source can act on, and how. Tags are ``source:subject:action``.
SUBJECT_ACTIONS: dict[str, tuple[str, ...]] = {
    "organization": ("created",),
    "api_key": ("created", "revoked"),
    "contact": ("created", "updated", "deleted", "unsubscribed", "resubscribed"),
    "company": ("created", "updated", "deleted"),
    "sequence": ("created", "updated", "deleted"),
    "step": ("created", "updated", "deleted"),
    # created: enrolled; skipped: not enrolled (ineligible, already enrolled, unknown);
    # exited: left early with a reason; completed: finished or unenrolled through the bot API.
    "enrollment": ("created", "skipped", "paused", "resumed", "exited", "completed", "failed"),
    # A webhook delivery: received (stored), rejected (failed verification), duplicate (a repeat
    # of a stored one), processed (its actions ran), failed (an attempt failed; it will retry),
    # dead (out of attempts), replayed (queued again by an operator).
    "delivery": ("received", "rejected", "duplicate", "processed", "failed", "dead", "replayed"),
    # A REST hook subscription: deleted by its owner, or by the worker when the target answered
    # 410 Gone; disabled by the worker when every send failed for HOOK_DISABLE_AFTER_SECONDS.
    "hook_subscription": ("created", "deleted", "disabled"),
    # Old deliveries, keys and outbox rows deleted by `seqbridge deliveries prune` (one per organization).
    "retention": ("pruned",),
    # A console sign-in with an API key (created) and its end (ended: signed out).
    "console_session": ("created", "ended"),
    # Replay by filter: created and cancelled by a key; finished by the worker that ran it.
    "replay_job": ("created", "cancelled", "finished"),
}
SOURCES = ("api", "cli", "hook", "worker")

#: Every kind of audit event, e.g. ``AuditTag.API_CONTACT_CREATED == "api:contact:created"``.
AuditTag = StrEnum(
    "AuditTag",
    {
        f"{source}_{subject}_{action}".upper(): f"{source}:{subject}:{action}"
        for source in SOURCES
        for subject, actions in SUBJECT_ACTIONS.items()
        for action in actions
    },
)

_SOURCE_OF_ACTOR = {
    ActorType.API_KEY: "api",
    ActorType.CLI: "cli",
    ActorType.HOOK: "hook",
    ActorType.WORKER: "worker",
}


def tag_for(caller: Caller, subject: str, action: str) -> AuditTag:
    """The tag for ``subject:action`` done by this caller (its actor decides the source)."""
    return AuditTag(f"{_SOURCE_OF_ACTOR[caller.actor.type]}:{subject}:{action}")


REDACTED = "[REDACTED]"
_SECRET_KEY = re.compile(
    r"secret|token|passw|api[_-]?key|authorization|signature|cookie|private[_-]?key|^key$|credential",
    re.IGNORECASE,
)
_SECRET_VALUE = re.compile(r"rk_live_[A-Za-z0-9_\-]{20,}|whsec_[A-Za-z0-9+/=]{16,}")


@lru_cache(maxsize=4096)
def _is_secret_key(key: str) -> bool:
    return _SECRET_KEY.search(key) is not None


def redact(value: Any) -> Any:
    """Return ``value`` with every secret-looking key's value and every API key string replaced."""
    if isinstance(value, dict):
        return {
            k: (REDACTED if isinstance(k, str) and v not in (None, "") and _is_secret_key(k) else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str) and ("rk_live_" in value or "whsec_" in value):
        return _SECRET_VALUE.sub(REDACTED, value)
    return value


def redact_strings(values: dict[str, str], also: str | None = None) -> dict[str, str]:
    """A flat mapping of text (headers) redacted as :func:`redact` would, faster; ``also`` names
    one more key to redact whatever it is called (a hook's own token header)."""
    also = also.lower() if also else None
    out = {}
    for key, value in values.items():
        if key == also or (value and _is_secret_key(key)):
            out[key] = REDACTED
        elif "rk_live_" in value or "whsec_" in value:
            out[key] = _SECRET_VALUE.sub(REDACTED, value)
        else:
            out[key] = value
    return out


def _canonical(row: dict[str, Any], data_json: str | None = None) -> bytes:
    """The bytes an event's hash covers: every field but the id, as canonical JSON with ``data``
    first and the rest in key order. Built from a template (this runs once per event on bulk
    paths); ``test_audit`` checks it equals the generic ``json.dumps`` form."""
    if data_json is None:
        data_json = _dumps(row["data"])
    occurred_at = row["occurred_at"].astimezone(UTC).isoformat(timespec="microseconds")
    request_id = row["request_id"]
    return (
        '{"data":'
        + data_json
        + ',"actor_id":'
        + _string(row["actor_id"])
        + ',"actor_type":'
        + _string(row["actor_type"])
        + ',"occurred_at":'
        + _string(occurred_at)
        + ',"org_id":'
        + _string(row["org_id"])
        + ',"prev_hash":'
        + _string(row["prev_hash"])
        + ',"request_id":'
        + ("null" if request_id is None else _string(request_id))
        + ',"subject_id":'
        + _string(row["subject_id"])
        + ',"subject_type":'
        + _string(row["subject_type"])
        + ',"tag":'
        + _string(row["tag"])
        + "}"
    ).encode()


_string = json.encoder.encode_basestring  # what json.dumps(ensure_ascii=False) uses for str


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def event_hash(row: dict[str, Any], data_json: str | None = None) -> str:
    return hashlib.sha256(_canonical(row, data_json)).hexdigest()


def record(
    tx: Tx,
    caller: Caller,
    tag: AuditTag,
    subject_type: str,
    subject_id: str,
    data: dict[str, Any] | None,
    now: datetime,
) -> None:
    """Append one audit event in the caller's organization, inside ``tx``."""
    record_many(tx, caller, [(tag, subject_type, subject_id, data)], now)


def record_many(
    tx: Tx,
    caller: Caller,
    entries: list[tuple[AuditTag, str, str, dict[str, Any] | None]],
    now: datetime,
) -> None:
    """Append several events (``(tag, subject_type, subject_id, data)``) with one insert."""
    record_each(tx, [(caller, *entry) for entry in entries], now)


def record_each(
    tx: Tx,
    entries: list[tuple[Caller, AuditTag, str, str, dict[str, Any] | None]],
    now: datetime,
) -> None:
    """Append events of possibly different callers (and organizations), in the order given.

    They are written when the transaction commits (:func:`write_pending`): one chain lock and
    one insert per organization for everything the transaction recorded, and the chain head is
    locked only for that moment, not from the first change to the commit. A part of the
    transaction that rolls back (a SAVEPOINT) takes its events with it.
    """
    for entry in entries:
        tx.before_commit(write_pending, (now, entry))


def write_pending(tx: Tx, pending: list[tuple]) -> None:
    """Write the events ``tx`` recorded, chained, just before it commits."""
    by_org: dict[str, list[tuple]] = {}
    for now, entry in pending:
        by_org.setdefault(entry[0].org_id, []).append((now, *entry))
    for org_id, org_entries in by_org.items():
        head = tx.audit.lock_chain_head(org_id)
        prev_hash = head["last_hash"]
        rows = []
        for now, caller, tag, subject_type, subject_id, data in org_entries:
            row = {
                "org_id": org_id,
                "occurred_at": now,
                "actor_type": caller.actor.type.value,
                "actor_id": caller.actor.id,
                "tag": tag.value,
                "subject_type": subject_type,
                "subject_id": subject_id,
                "request_id": caller.request_id,
                "prev_hash": prev_hash,
            }
            if caller.via:
                data = {**(data or {}), "via": caller.via}
            data_json = _dumps(redact(data or {}))
            # Stored as the exact canonical text that was hashed, so verification recomputes it.
            row["data"] = RawJSON(data_json)
            row["hash"] = prev_hash = event_hash(row, data_json)
            rows.append(row)
        tx.audit.append_events(org_id, rows)


@dataclass(frozen=True)
class ChainProblem:
    org_id: str
    event_id: int | None
    problem: str

    def __str__(self) -> str:
        where = f"event {self.event_id}" if self.event_id is not None else "chain head"
        return f"organization {self.org_id}: {where}: {self.problem}"


def verify_chain(db: Database, org_id: str | None = None) -> tuple[int, list[ChainProblem]]:
    """Walk every organization's chain (or only ``org_id``'s); return (events checked, first
    problem per organization)."""
    checked = 0
    problems: list[ChainProblem] = []
    with db.transaction(write=False) as tx:
        for head in tx.audit.chain_heads():
            if org_id is not None and head["org_id"] != org_id:
                continue
            count, problem = _verify_one(tx, head)
            checked += count
            if problem:
                problems.append(problem)
    return checked, problems


def _verify_one(tx: Tx, head: dict[str, Any]) -> tuple[int, ChainProblem | None]:
    org_id = head["org_id"]
    checked, prev_hash, last_id = 0, "", 0
    for event in tx.audit.iter_chain(org_id):
        checked += 1
        if event["prev_hash"] != prev_hash:
            return checked, ChainProblem(
                org_id, event["id"], "previous-hash link broken: an earlier event was deleted or edited"
            )
        if event_hash(event) != event["hash"]:
            return checked, ChainProblem(org_id, event["id"], "contents do not match the stored hash: edited")
        prev_hash, last_id = event["hash"], event["id"]
    if head["last_hash"] != prev_hash or head["last_event_id"] != last_id:
        return checked, ChainProblem(
            org_id, head["last_event_id"], "the newest events are missing: the chain was truncated"
        )
    return checked, None

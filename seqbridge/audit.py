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


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _dumps(value: Any) -> str:
    return _ENCODER.encode(value)


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
    """Write the events ``tx`` recorded, chained, just before it commits.

    This runs for every event the worker writes (six per WhatsApp STOP), so it is one tight loop:
    what events of one caller at one instant share (the actor, the time, ``via``) is serialised
    once, and each event's hashed text is spliced from those pieces; ``test_audit`` checks it is
    byte for byte what :func:`_canonical` gives, which verification uses."""
    by_org: dict[str, list[tuple]] = {}
    for now, entry in pending:
        by_org.setdefault(entry[0].org_id, []).append((now, *entry))
    for org_id, org_entries in by_org.items():
        head = tx.audit.lock_chain_head(org_id)
        prev_hash = head["last_hash"]
        rows = []
        shared: dict[tuple[int, datetime], tuple[str, str, str | None]] = {}
        for now, caller, tag, subject_type, subject_id, data in org_entries:
            key = (id(caller), now)
            if key not in shared:
                shared[key] = _shared_parts(org_id, caller, now)
            middle, tail, via_json = shared[key]
            data_json = _data_json(data, caller.via, via_json)
            canonical = (
                '{"data":'
                + data_json
                + middle
                + prev_hash
                + tail
                + _string(subject_id)
                + ',"subject_type":'
                + _string(subject_type)
                + ',"tag":'
                + _string(tag.value)
                + "}"
            )
            actor = caller.actor
            event_prev, prev_hash = prev_hash, hashlib.sha256(canonical.encode()).hexdigest()
            rows.append(
                {
                    "org_id": org_id,
                    "occurred_at": now,
                    "actor_type": actor.type.value,
                    "actor_id": actor.id,
                    "tag": tag.value,
                    "subject_type": subject_type,
                    "subject_id": subject_id,
                    "request_id": caller.request_id,
                    "prev_hash": event_prev,
                    # Stored as the exact canonical text that was hashed, so verification recomputes it.
                    "data": RawJSON(data_json),
                    "hash": prev_hash,
                }
            )
        tx.audit.append_events(org_id, rows)


def _shared_parts(org_id: str, caller: Caller, now: datetime) -> tuple[str, str, str | None]:
    """What every event of ``caller`` at ``now`` has in its hashed text: the fields between
    ``data`` and the previous hash, those between it and the subject, and ``via`` serialised."""
    occurred_at = now.astimezone(UTC).isoformat(timespec="microseconds")
    request_id = caller.request_id
    middle = (
        ',"actor_id":'
        + _string(caller.actor.id)
        + ',"actor_type":'
        + _string(caller.actor.type.value)
        + ',"occurred_at":'
        + _string(occurred_at)
        + ',"org_id":'
        + _string(org_id)
        + ',"prev_hash":"'
    )
    tail = '","request_id":' + ("null" if request_id is None else _string(request_id)) + ',"subject_id":'
    via_json = _redacted_json(caller.via) if caller.via else None
    return middle, tail, via_json


def _data_json(data: dict[str, Any] | None, via: dict | None, via_json: str | None) -> str:
    """``data`` with the caller's ``via``, redacted, as canonical JSON: what
    ``_dumps(redact({**data, "via": via}))`` gives, without copying ``data`` when it holds
    nothing to redact, nor serialising ``via`` again for every event (``via_json``)."""
    if not data:
        return "{}" if via_json is None else '{"via":' + via_json + "}"
    if via_json is not None and not all(type(k) is str and k < "via" for k in data):
        return _dumps(redact({**data, "via": via}))  # "via" does not sort last: the plain way
    text = _redacted_json(data)
    return text if via_json is None else text[:-1] + ',"via":' + via_json + "}"


#: What any secret-looking key (:data:`_SECRET_KEY`) or value leaves in JSON text, lowercased.
#: A superset: a plain value that says "token" matches too, and is then redacted the thorough
#: way, which leaves it as it is. (Substring tests: the alternation costs more than the dump.)
_MAYBE_SECRET = (
    "secret",
    "token",
    "passw",
    *(f"{kind}{sep}key" for kind in ("api", "private") for sep in ("", "_", "-")),
    '"key"',
    "authorization",
    "signature",
    "cookie",
    "credential",
    "rk_live_",
    "whsec_",
)


def _redacted_json(value: Any) -> str:
    """``_dumps(redact(value))``, without the walk and the copy when the text shows nothing
    that :func:`redact` would replace."""
    text = _ENCODER.encode(value)
    if not text.isascii():  # the key pattern ignores case the Unicode way (a long s is an s)
        return _ENCODER.encode(redact(value))
    lowered = text.lower()
    for needle in _MAYBE_SECRET:
        if needle in lowered:
            return _ENCODER.encode(redact(value))
    return text


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

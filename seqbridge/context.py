"""Who is acting, for which organization, under which request."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class ActorType(StrEnum):
    API_KEY = "api_key"  # a request authenticated with an API key; id is the key id
    HOOK = "hook"  # an inbound webhook; id is the hook name
    WORKER = "worker"  # the background processor; id names the worker
    CLI = "cli"  # the seqbridge command line; id is "cli"


@dataclass(frozen=True)
class Actor:
    type: ActorType
    id: str

    def __str__(self) -> str:
        return f"{self.type.value}:{self.id}"


@dataclass(frozen=True)
class Caller:
    """The organization a use case acts for, who asked, and the request it belongs to."""

    org_id: str
    actor: Actor
    request_id: str | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)
    #: Why this is happening, when it is not a direct API call: e.g. the webhook delivery, hook and
    #: rule that caused it. Every audit event the caller records carries it as ``via``.
    via: dict | None = None

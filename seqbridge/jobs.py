"""The job contract's vocabulary: what one claimed item came to, and the one retry policy.

Every kind of background work (webhook deliveries, sequence steps, REST hook notifications) runs
the same way, as procrastinate's and River's workers do: *claim a batch → run each item → one
typed outcome per item → settle the batch*. The worker loop (:mod:`seqbridge.worker`) only claims,
runs and hands outcomes back; what an outcome means for the item (a delivery processed, an
enrollment failed, a subscription disabled) is decided where that item's rules live, in the
services, when they settle the batch.

The outcomes are plain frozen values:

- :class:`Done`: finished; its effects are written when the batch settles;
- :class:`Retry`: not now; run again at ``at`` (an attempt was used, unless it is a snooze:
  waiting for a send window or a paused enrollment uses none);
- :class:`Failed`: it cannot succeed as it is, and another attempt would not help;
- :class:`Dead`: it kept failing for reasons that might pass, and ran out of attempts.

:class:`RetryPolicy` decides between :class:`Retry` and :class:`Dead` after a failure that may
pass, with exponential backoff and jitter, never sooner than a server's ``Retry-After``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any


class OutcomeKind(StrEnum):
    DONE = "done"  # finished: the item leaves the queue with its effects
    RETRY = "retry"  # back in the queue until `at`
    FAILED = "failed"  # ended by an error a retry cannot fix
    DEAD = "dead"  # ended after running out of attempts on errors that might have passed


@dataclass(frozen=True)
class Done:
    """The item finished. ``result`` is what the job's settle step needs (e.g. a delivery's
    results, a step's send)."""

    result: Any = None
    kind = OutcomeKind.DONE


@dataclass(frozen=True)
class Retry:
    """Run the item again at ``at``. ``error`` is why (None for a snooze); ``counts`` False
    gives the attempt back (the item did not try: a send window was closed)."""

    at: datetime
    error: str | None = None
    counts: bool = True
    kind = OutcomeKind.RETRY


@dataclass(frozen=True)
class Failed:
    """The item cannot succeed as it is. ``result`` carries what the job records with it."""

    error: str
    result: Any = None
    kind = OutcomeKind.FAILED


@dataclass(frozen=True)
class Dead:
    """The item ran out of attempts; ``error`` is the last one's."""

    error: str
    attempts: int
    kind = OutcomeKind.DEAD


Outcome = Done | Retry | Failed | Dead

#: The longest a Retry-After is honoured: a server asking for more is treated as asking for a day.
MAX_RETRY_AFTER_SECONDS = 86_400.0


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, bounded attempts.

    Attempt ``n`` (1-based) that failed waits ``base * 2**(n-1)`` seconds, capped at ``cap``,
    times a random factor in ``1 ± jitter`` (so a burst of failures does not retry in step). A
    server's ``Retry-After`` replaces that wait (at least 1 s, at most a day): the server knows
    when it will be back. After ``max_attempts`` attempts the item is :class:`Dead`.
    """

    base_seconds: float
    cap_seconds: float
    max_attempts: int
    jitter: float = 0.2

    @classmethod
    def from_settings(cls, settings: dict[str, Any], prefix: str) -> RetryPolicy:
        """The policy configured under ``<prefix>_RETRY_BASE_SECONDS``, ``_RETRY_MAX_SECONDS`` and
        ``<prefix>_MAX_ATTEMPTS`` (``prefix`` "DELIVERY" or "PROCESSOR"; the steps' and REST
        hooks' backoff settings have no prefix: ``RETRY_BASE_SECONDS``)."""
        backoff = "" if prefix == "PROCESSOR" else f"{prefix}_"
        return cls(
            float(settings[f"{backoff}RETRY_BASE_SECONDS"]),
            float(settings[f"{backoff}RETRY_MAX_SECONDS"]),
            int(settings[f"{prefix}_MAX_ATTEMPTS"]),
        )

    def delay(
        self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based)."""
        if retry_after is not None:
            return min(max(float(retry_after), 1.0), MAX_RETRY_AFTER_SECONDS)
        wait = min(self.cap_seconds, self.base_seconds * 2 ** max(0, attempt - 1))
        return wait * (rng or random).uniform(1 - self.jitter, 1 + self.jitter)

    def after_failure(
        self,
        attempts: int,
        error: str,
        now: datetime,
        *,
        retry_after: float | None = None,
        max_attempts: int | None = None,
        rng: random.Random | None = None,
    ) -> Retry | Dead:
        """What an item that failed its ``attempts``-th attempt with ``error`` (which might pass)
        comes to: :class:`Retry` after the backoff, or :class:`Dead` once ``max_attempts`` (the
        item's own limit, else the policy's) are used up."""
        if attempts >= (max_attempts or self.max_attempts):
            return Dead(error, attempts)
        return Retry(now + timedelta(seconds=self.delay(attempts, retry_after, rng)), error)

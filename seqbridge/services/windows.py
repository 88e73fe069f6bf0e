"""Send windows: the days and hours a sequence may send, in a fixed time zone or the contact's.

A step due outside the window waits for the next opening; the delays after it then count from
when it was actually sent.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def window_zone(window: dict[str, Any], contact_timezone: str | None) -> ZoneInfo:
    """The zone the window is read in: its own, or the contact's (falling back as configured)."""
    name = window.get("timezone") or "UTC"
    if name == "contact":
        name = contact_timezone or window.get("fallback_timezone") or "UTC"
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(window.get("fallback_timezone") or "UTC")


def next_opening(
    now: datetime, window: dict[str, Any] | None, contact_timezone: str | None = None
) -> datetime:
    """``now`` if the window is open, else the moment it next opens (aware, UTC-comparable)."""
    if not window:
        return now
    zone = window_zone(window, contact_timezone)
    days = set(window.get("days") or DAYS)
    start = time.fromisoformat(window.get("start") or "00:00")
    end = time.fromisoformat(window.get("end") or "23:59")
    local = now.astimezone(zone)
    for offset in range(8):
        day = local.date() + timedelta(days=offset)
        if DAYS[day.weekday()] not in days:
            continue
        opens = datetime.combine(day, start, tzinfo=zone)
        closes = datetime.combine(day, end, tzinfo=zone)
        if offset == 0 and opens <= local < closes:
            return now
        if opens > local:
            return opens.astimezone(now.tzinfo)
    return now  # no allowed day at all: never hold forever

"""Time as Kubernetes writes it (RFC 3339, UTC, whole seconds: "2026-01-02T03:04:05Z"), and
a clock that tests can set.

Every timestamp tuxio writes or reads in an API object goes through `format_time` and
`parse_time`; every age is `seconds_since`. Pure, except `SystemClock`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = [
    "Clock",
    "FixedClock",
    "SystemClock",
    "add_seconds",
    "format_time",
    "parse_time",
    "seconds_since",
]


def format_time(when: datetime) -> str:
    """RFC 3339 in UTC with whole seconds, as Kubernetes writes its own timestamps."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    """An RFC 3339 timestamp ('...Z' or with an offset) as an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def add_seconds(text: str, seconds: float) -> str:
    """The RFC 3339 timestamp `seconds` after `text`."""
    return format_time(parse_time(text) + timedelta(seconds=seconds))


def seconds_since(text: str | None, now: datetime) -> float:
    """How long ago `text` was at `now`; infinitely long when there is no timestamp."""
    if not text:
        return float("inf")
    return (now - parse_time(text)).total_seconds()


class Clock(Protocol):
    """Wall time for what is written to API objects, monotonic time for waiting."""

    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...


class SystemClock:
    """The machine's clocks."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


@dataclass
class FixedClock:
    """A clock that moves only when told (tests)."""

    at: datetime
    ticks: float = 0.0

    def now(self) -> datetime:
        return self.at

    def monotonic(self) -> float:
        return self.ticks

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)
        self.ticks += seconds

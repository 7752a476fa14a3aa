"""Who gets a sandbox now, who waits in line, who is told to come back later (pure).

Visitors beyond the cap take a ticket; the line moves in order as room frees, so a newcomer
never overtakes a visitor who waits. A ticket not polled for `ticket_seconds` is dropped (its
tab was closed), so an abandoned line holds nobody up.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Admission", "Admit", "Full", "Queued"]

POLL_SECONDS = 2.0  # how soon a waiting page asks again
FULL_RETRY_SECONDS = 30.0  # when even the line is full


@dataclass(frozen=True)
class Admit:
    pass


@dataclass(frozen=True)
class Queued:
    position: int
    retry_after: float


@dataclass(frozen=True)
class Full:
    retry_after: float


class Admission:
    def __init__(
        self,
        queue_length: int,
        ticket_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cap = 0
        self._queue_length = queue_length
        self._ticket_seconds = ticket_seconds
        self._clock = clock
        self._line: OrderedDict[str, float] = OrderedDict()  # session -> last poll

    @property
    def waiting(self) -> int:
        self._expire()
        return len(self._line)

    def _expire(self) -> None:
        now = self._clock()
        for session, polled in list(self._line.items()):
            if now - polled > self._ticket_seconds:
                del self._line[session]

    def decide(self, session: str, active: int) -> Admit | Queued | Full:
        """`active` sandboxes exist (or are being made); may `session` have one more?"""
        self._expire()
        room = self.cap - active
        if session in self._line:
            position = list(self._line).index(session) + 1
            if position <= room:
                del self._line[session]
                return Admit()
            self._line[session] = self._clock()
            return Queued(position, POLL_SECONDS)
        if not self._line and room > 0:
            return Admit()
        if len(self._line) >= self._queue_length:
            return Full(FULL_RETRY_SECONDS)
        self._line[session] = self._clock()
        return Queued(len(self._line), POLL_SECONDS)

    def leave(self, session: str) -> None:
        self._line.pop(session, None)

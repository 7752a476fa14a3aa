"""The one retry delay: exponential, capped. Pure."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True)
class Backoff:
    """`first` seconds after the first failure, doubling with each failure in a row, never
    more than `cap` (what an unreachable agent, a failed deletion and a failed reconciliation
    all wait)."""

    first: float = 2.0
    cap: float = 30.0

    def delay(self, failures: int) -> float:
        """The wait after `failures` failures in a row before this one (0: the first)."""
        return float(min(self.cap, self.first * 2 ** min(max(failures, 0), 16)))

"""What is written to the ledger: plain records, built by whoever observes a sandbox."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

__all__ = ["Entry", "SandboxFacts"]


@dataclass(frozen=True)
class SandboxFacts:
    """What is known of a sandbox at one observation; None: not known (yet), which never
    erases what an earlier observation recorded."""

    uid: str
    namespace: str
    name: str
    template: str | None = None
    host: str | None = None
    region: str | None = None
    pool: str | None = None
    launch: str | None = None  # "warm" or "cold"
    cpus: int | None = None
    memory_bytes: int | None = None
    disk_bytes: int | None = None
    cpu_seconds: float | None = None
    memory_peak_bytes: int | None = None
    disk_peak_bytes: int | None = None
    country: str | None = None
    creator: str | None = None

    def row(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Entry:
    """One observation: the sandbox's facts and the events seen so far, each with its time."""

    facts: SandboxFacts
    events: dict[str, datetime] = field(default_factory=dict)

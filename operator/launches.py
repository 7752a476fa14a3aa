"""When each Sandbox arrived and when its container was first asked for, so that its claim
and creation latencies are observed exactly once, however often a step is retried.

A Sandbox arrives when this process claims a warm container for it at admission, else when
the watch first shows it; after a restart (the initial listing) it arrived at its
creationTimestamp, the only record left (whole seconds). Its claim latency is observed at the
status write that first makes it Ready, its creation latency at the first answer of the agent
that the new container runs; both are then marked done, so a retried step, a requeue or a
second status write never adds a sample. Everything is forgotten with the Sandbox.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from tuxio.common.timeutil import seconds_since

from .metrics import CLAIM_SECONDS, CREATION_SECONDS, POOL_MISSES

__all__ = ["Launches"]


class Launches:
    """Arrival and creation start per Sandbox UID, and which latencies were observed."""

    def __init__(self, monotonic: Callable[[], float], now: Callable[[], datetime]) -> None:
        self._monotonic = monotonic
        self._now = now
        self._admitted: dict[str, float] = {}  # warm container -> when it was claimed
        self._arrived: dict[str, float] = {}
        self._creating: dict[str, float] = {}
        self._claim_done: set[str] = set()
        self._creation_done: set[str] = set()

    def admitted(self, container: str) -> None:
        """A warm container was claimed at admission for a Sandbox not stored yet."""
        self._admitted[container] = self._monotonic()
        if len(self._admitted) > 1024:
            self.expire_admissions(600.0)

    def arrived(self, uid: str, created: str | None, container: str | None, listing: bool) -> None:
        """The watch shows the Sandbox (`listing`: in the initial listing after a start);
        `container` is the one its assignment names, if any."""
        if uid in self._arrived:
            return
        claimed = self._admitted.pop(container, None) if container else None
        if claimed is not None:
            self._arrived[uid] = claimed
        elif listing and created:
            self._arrived[uid] = self._monotonic() - max(0.0, seconds_since(created, self._now()))
        else:
            self._arrived[uid] = self._monotonic()

    def creating(self, uid: str) -> None:
        """The agent is asked for the Sandbox's new container (the first time counts)."""
        if uid not in self._creation_done:
            self._creating.setdefault(uid, self._monotonic())

    def created(self, uid: str, template: str) -> None:
        """The agent answered that the new container runs."""
        started = self._creating.pop(uid, None)
        if started is None or uid in self._creation_done:
            return
        self._creation_done.add(uid)
        CREATION_SECONDS.labels("cold", template).observe(self._monotonic() - started)

    def ready(self, uid: str, warm: bool, template: str, pool: tuple[str, str] | None) -> None:
        """The status write that first makes the Sandbox Ready; `pool` (namespace, name) of a
        Sandbox of a pool, to count a miss when it was created cold."""
        started = self._arrived.get(uid)
        if started is None or uid in self._claim_done:
            return
        self._claim_done.add(uid)
        CLAIM_SECONDS.labels("warm" if warm else "cold", template).observe(
            self._monotonic() - started
        )
        if pool is not None and not warm:
            POOL_MISSES.labels(*pool).inc()

    def forget(self, uid: str) -> None:
        """The Sandbox is gone."""
        self._arrived.pop(uid, None)
        self._creating.pop(uid, None)
        self._claim_done.discard(uid)
        self._creation_done.discard(uid)

    def expire_admissions(self, older_than: float) -> None:
        """Drop claims at admission whose Sandbox never showed (refused after the webhook)."""
        cutoff = self._monotonic() - older_than
        for container, at in list(self._admitted.items()):
            if at < cutoff:
                del self._admitted[container]

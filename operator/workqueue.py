"""A level-triggered work queue: the latest body of each object, one reconciliation at a time
per object, retries with backoff.

What controller-runtime's workqueue does for Go operators, for the Sandboxes: kopf delivers
every watch event (an `on.event` handler), the queue keeps only the newest body of each
Sandbox and runs the reconciliation on it, once at a time per Sandbox; a RequeueAfter runs it
again after its delay (sooner if a newer body arrives), a TerminalError waits for the next
change, anything else is retried with the backoff. kopf's change-detecting handlers would
instead keep a diff base in each object and write it back with every status: a bigger object
and more work on every event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from .backoff import Backoff
from .errors import RequeueAfter, TerminalError
from .metrics import WORKQUEUE_ADDS, WORKQUEUE_DEPTH, WORKQUEUE_RETRIES, reconciliation

__all__ = ["Work", "WorkQueue"]

log = logging.getLogger(__name__)

# One reconciliation, of the newest body: called with how many attempts failed in a row.
Work = Callable[[int], Awaitable[None]]


class WorkQueue:
    """Per key (a Sandbox's UID): the newest work, and a task while there is work."""

    def __init__(self, backoff: Backoff | None = None, kind: str = "Sandbox") -> None:
        self._backoff = backoff or Backoff(first=1.0)
        # Metrics: the queue's name and the kind its reconciliations are counted under.
        self.kind = kind
        self._depth = WORKQUEUE_DEPTH.labels(kind.lower())
        self._adds = WORKQUEUE_ADDS.labels(kind.lower())
        self._retries = WORKQUEUE_RETRIES.labels(kind.lower())
        self._latest: dict[str, Work] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._forgotten: set[str] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def add(self, key: str, work: Work) -> None:
        """Do `work` for `key` (a reconciliation of its newest body): now, or once the one
        under way ends; work added meanwhile replaces work not started yet."""
        self._forgotten.discard(key)
        self._latest[key] = work
        self._adds.inc()
        self._depth.set(len(self._latest))
        wake = self._wake.get(key)
        if wake is not None:
            wake.set()
            return
        self._wake[key] = asyncio.Event()
        self._tasks[key] = asyncio.create_task(self._run(key), name=f"reconcile {key}")

    def drop(self, key: str) -> None:
        """Drop work for `key` not started yet, retries included: its newest state needs
        none (an older body queued behind a reconciliation that has since settled it)."""
        if self._latest.pop(key, None) is not None:
            self._depth.set(len(self._latest))
            self._wake[key].set()

    def forget(self, key: str) -> None:
        """Stop working on `key` (it is being deleted): a reconciliation under way finishes,
        nothing is retried."""
        self._latest.pop(key, None)
        self._depth.set(len(self._latest))
        if key in self._tasks:
            self._forgotten.add(key)
            self._wake[key].set()

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        for task in list(self._tasks.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, key: str) -> None:
        wake = self._wake[key]
        failures = 0
        try:
            while key in self._latest and key not in self._forgotten:
                work = self._latest.pop(key)
                self._depth.set(len(self._latest))
                wake.clear()
                delay: float | None = None
                try:
                    with reconciliation(self.kind):
                        await work(failures)
                    failures = 0
                except RequeueAfter as exc:
                    delay = exc.delay
                    log.info("%s: %s; again in %.1fs", key, exc, delay)
                except TerminalError as exc:
                    log.warning("%s: %s; waiting for a change", key, exc)
                    failures = 0
                except Exception:
                    delay = self._backoff.delay(failures)
                    log.exception("%s: reconciliation failed; again in %.1fs", key, delay)
                if delay is None:
                    continue
                failures += 1
                self._retries.inc()
                # Again with this body, unless a newer one arrives before the delay is up.
                self._latest.setdefault(key, work)
                self._depth.set(len(self._latest))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), delay)
        finally:
            # No await between the loop's last check and here: an add() now starts anew.
            del self._tasks[key]
            del self._wake[key]
            if key in self._forgotten:
                self._forgotten.discard(key)
                self._latest.pop(key, None)
            self._depth.set(len(self._latest))

"""The usage ledger's writer: off the claim's hot path, in batches, in a thread.

`observe` keeps the newest body of each Sandbox (a dict assignment: nothing else happens on
the watch's path); one task turns what gathered into entries and writes them as one batch
in a worker thread, while the next batch gathers. The database is opened (and migrated) there
too, at the first batch: the operator starts no slower for it, and a database that cannot be
reached is tried again, with backoff, like a failed batch. `record` is for the finalizer: the final
entry of a Sandbox, written before its container is destroyed, awaited for RECORD_PATIENCE
seconds at most: a ledger that cannot be written (a database down, a broken schema) keeps the
entry for its next try and never holds up a deletion. A batch that fails is
kept and tried again; one lost to a kill is not lost either: a restarted operator reads every
Sandbox again, and the writes are idempotent (tuxio.ledger.store).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from tuxio.ledger.records import Entry
from tuxio.nodeagent.models import Usage

from .backoff import Backoff
from .ledger_entries import entry_of

if TYPE_CHECKING:
    from tuxio.ledger.store import Ledger

__all__ = ["LedgerWriter"]

log = logging.getLogger(__name__)

# How long a deletion waits for its final entry to be stored before it goes on without.
RECORD_PATIENCE = 10.0


class LedgerWriter:
    """Writes Sandboxes' entries to the ledger at `url`, batched."""

    def __init__(
        self,
        url: str,
        region_of: Callable[[str], str | None],
        backoff: Backoff,
        record_patience: float = RECORD_PATIENCE,
    ) -> None:
        self.url = url
        self.record_patience = record_patience
        self.ledger: Ledger | None = None
        self.region_of = region_of
        self.backoff = backoff
        self._bodies: dict[str, Mapping[str, Any]] = {}
        self._finals: list[tuple[Entry, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # batches written, for tests and logs

    def observe(self, body: Mapping[str, Any]) -> None:
        """Note a Sandbox as the watch delivered it; written with the next batch."""
        self._bodies[body["metadata"]["uid"]] = body
        self._kick()

    async def record(self, body: Mapping[str, Any], final: Usage | None) -> bool:
        """Write the Sandbox's entry with its final counters; True once it is stored, False
        if it was not within `record_patience` (it stays queued and is written later)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._finals.append((entry_of(body, self.region_of, final), done))
        self._kick()
        try:
            await asyncio.wait_for(asyncio.shield(done), self.record_patience)
        except TimeoutError:
            meta = body["metadata"]
            log.warning(
                "ledger: the final entry of %s/%s is not stored after %.0fs; kept for the "
                "ledger's next try, the deletion goes on",
                meta.get("namespace"),
                meta.get("name"),
                self.record_patience,
            )
            return False
        return True

    def _kick(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ledger writer")
        self._wake.set()

    async def _run(self) -> None:
        failures = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            bodies, self._bodies = self._bodies, {}
            finals, self._finals = self._finals, []
            try:
                ledger = await self._opened()
                entries = self._entries(bodies)
                await asyncio.to_thread(ledger.write, entries + [e for e, _ in finals])
            except Exception as exc:
                delay = self.backoff.delay(failures)
                failures += 1
                log.warning(
                    "ledger: %d entries not written: %r; again in %.1fs",
                    len(bodies) + len(finals),
                    exc,
                    delay,
                )
                # Kept for the next try, behind whatever newer bodies came meanwhile.
                self._bodies = {**bodies, **self._bodies}
                self._finals = finals + self._finals
                await asyncio.sleep(delay)
                self._wake.set()
                continue
            failures = 0
            self.batches += 1
            for _, done in finals:
                if not done.done():
                    done.set_result(None)

    async def _opened(self) -> Ledger:
        if self.ledger is None:
            from tuxio.ledger.store import Ledger  # SQLAlchemy: loaded off the start-up path

            self.ledger = await asyncio.to_thread(Ledger.open, self.url)
            log.info("ledger: %s open", self.ledger.engine.url.render_as_string())
        return self.ledger

    def _entries(self, bodies: Mapping[str, Mapping[str, Any]]) -> list[Entry]:
        entries = []
        for uid, body in bodies.items():
            try:
                entries.append(entry_of(body, self.region_of))
            except ValueError as exc:  # a spec the CRD schema let through but we cannot read
                log.warning("ledger: sandbox %s not recorded: %s", uid, exc)
        return entries

    async def close(self) -> None:
        """Write what is pending, then stop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            if self._bodies or self._finals:
                with contextlib.suppress(Exception):
                    ledger = await self._opened()
                    entries = self._entries(self._bodies) + [e for e, _ in self._finals]
                    await asyncio.to_thread(ledger.write, entries)
        if self.ledger is not None:
            await asyncio.to_thread(self.ledger.close)

"""Visitor sessions and their sandboxes: one sandbox per session, made on the first visit,
found again on a reload, deleted a grace period after its last tab closed or at its TTL.

A sandbox is registered under its session before it is asked for, and its making runs as a
task of its own: a visitor who leaves mid-way (a burst of reloads, a closed tab) cancels only
their wait, never the making, and the reaper deletes what nobody came back for. Nothing a
burst does leaves a sandbox behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from .admission import Admission, Admit, Full, Queued
from .ratelimit import RateLimiter
from .sandboxes import Sandboxes, VisitorSandbox

__all__ = ["Admitted", "Failed", "Limited", "Visit", "Visits"]

log = logging.getLogger("tuxio.web")

FAILED_RETRY_SECONDS = 5.0


@dataclass
class Visit:
    session: str
    address: str
    terminal: str
    started: float
    making: asyncio.Task[VisitorSandbox] | None = None
    sandbox: VisitorSandbox | None = None
    name: str | None = None
    tabs: int = 0
    unwatched_since: float | None = None  # no tab since then (None: a tab is open)
    deleting: bool = False


@dataclass(frozen=True)
class Admitted:
    namespace: str
    name: str
    terminal: str
    token: str
    resumed: bool


@dataclass(frozen=True)
class Limited:
    retry_after: float


@dataclass(frozen=True)
class Failed:
    retry_after: float
    reason: str


@dataclass
class Visits:
    sandboxes: Sandboxes
    admission: Admission
    limiter: RateLimiter
    namespace: str
    grace_seconds: float
    ttl_seconds: float
    clock: Callable[[], float] = time.monotonic
    _visits: dict[str, Visit] = field(default_factory=dict)
    _deletions: set[asyncio.Task[None]] = field(default_factory=set)
    created_total: int = 0
    deleted_total: int = 0

    @property
    def active(self) -> int:
        return sum(1 for v in self._visits.values() if not v.deleting)

    def visit_of(self, session: str) -> Visit | None:
        visit = self._visits.get(session)
        return visit if visit is not None and not visit.deleting else None

    async def adopt(self) -> None:
        """Take over the sandboxes an earlier process made: each waits out a grace period
        for its visitor to come back."""
        for owned in await self.sandboxes.owned():
            if not owned.session or owned.session in self._visits:
                continue
            visit = Visit(owned.session, "", owned.terminal, self.clock(), name=owned.name)
            visit.unwatched_since = self.clock()
            self._visits[owned.session] = visit
        log.info("adopted %d sandboxes", len(self._visits))

    async def enter(
        self, session: str, address: str, *, new_terminal: bool = False
    ) -> Admitted | Queued | Full | Limited | Failed:
        """The visitor's sandbox (made if need be) and a fresh token for it, or why not now.
        `new_terminal`: a new terminal session in the same sandbox (the last one ended)."""
        visit = self.visit_of(session)
        if visit is not None and new_terminal:
            visit.terminal = secrets.token_hex(16)
        if visit is None:
            wait = self.limiter.retry_after(address)
            if wait > 0:
                return Limited(wait)
            decision = self.admission.decide(session, self.active)
            if not isinstance(decision, Admit):
                return decision
            self.limiter.take(address)
            visit = self._start(session, address)
            resumed = False
        else:
            resumed = True
        try:
            sandbox = await self._sandbox(visit)
            token = await self.sandboxes.token(sandbox)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the SDK's errors and the API server's, told to the visitor
            log.warning("session %s: no sandbox: %s", session[:8], exc)
            if not resumed:
                self.limiter.give_back(address)
            self._forget(visit)
            return Failed(FAILED_RETRY_SECONDS, "the shell could not be started")
        if visit.tabs == 0:  # the grace period to open a tab starts with the token
            visit.unwatched_since = self.clock()
        return Admitted(sandbox.namespace, sandbox.name, visit.terminal, token, resumed)

    def _start(self, session: str, address: str) -> Visit:
        # No grace clock while the sandbox is being made: it starts once it is made (nobody
        # may have waited) and again when the visitor is handed its token.
        visit = Visit(session, address, secrets.token_hex(16), self.clock())
        visit.making = asyncio.create_task(
            self.sandboxes.create(client_ip=address, session=session, terminal=visit.terminal)
        )
        visit.making.add_done_callback(lambda task: self._made(visit, task))
        self._visits[session] = visit
        return visit

    def _made(self, visit: Visit, task: asyncio.Task[VisitorSandbox]) -> None:
        if task.cancelled() or task.exception() is not None:
            # The Sandbox may exist (made, then never ready in time): find it by its label.
            self._track(self._delete_session(visit.session, visit))
            return
        visit.sandbox = task.result()
        visit.name = visit.sandbox.name
        if visit.tabs == 0:
            visit.unwatched_since = self.clock()
        self.created_total += 1
        log.info("session %s: sandbox %s", visit.session[:8], visit.name)
        if visit.deleting:  # forgotten while it was being made
            self._delete(visit)

    async def _sandbox(self, visit: Visit) -> VisitorSandbox:
        if visit.sandbox is None and visit.making is not None:
            await asyncio.shield(visit.making)
        if visit.sandbox is None:
            assert visit.name is not None
            visit.sandbox = await self.sandboxes.get(visit.name)
        return visit.sandbox

    # ----- tabs -----------------------------------------------------------------------------

    def tab_opened(self, session: str) -> bool:
        visit = self.visit_of(session)
        if visit is None:
            return False
        visit.tabs += 1
        visit.unwatched_since = None
        return True

    def tab_closed(self, session: str) -> None:
        visit = self.visit_of(session)
        if visit is None:
            return
        visit.tabs = max(0, visit.tabs - 1)
        if visit.tabs == 0:
            visit.unwatched_since = self.clock()

    # ----- the end of sandboxes ---------------------------------------------------------------

    def reap(self) -> list[str]:
        """Delete what nobody watched for the grace period and what outlived the TTL."""
        now = self.clock()
        gone = []
        for visit in list(self._visits.values()):
            if visit.deleting or (visit.making is not None and not visit.making.done()):
                continue  # being made: its own timeout bounds it
            unwatched = visit.unwatched_since is not None and (
                now - visit.unwatched_since >= self.grace_seconds
            )
            if unwatched or now - visit.started >= self.ttl_seconds:
                gone.append(visit.session)
                self._forget(visit)
        return gone

    def _forget(self, visit: Visit) -> None:
        visit.deleting = True
        if self._visits.get(visit.session) is visit:
            del self._visits[visit.session]
        if visit.making is not None and not visit.making.done():
            return  # _made deletes it once it exists
        self._delete(visit)

    def _delete(self, visit: Visit) -> None:
        if visit.name is None:
            return
        self._track(self._delete_now(visit.name))

    def _track(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._deletions.add(task)
        task.add_done_callback(self._deletions.discard)

    async def _delete_session(self, session: str, failed: Visit) -> None:
        try:
            owned = await self.sandboxes.owned()
        except Exception as exc:  # the TTL deletes it in the end
            log.warning("session %s: cannot list its sandboxes: %s", session[:8], exc)
            return
        live = self.visit_of(session)  # the failed visit itself, or a retry made since
        for found in owned:
            if found.session != session:
                continue
            if (
                live is not None
                and live is not failed
                and (
                    live.name == found.name or (live.making is not None and not live.making.done())
                )
            ):
                continue  # the sandbox of a visit that did not fail
            await self._delete_now(found.name)

    async def _delete_now(self, name: str) -> None:
        for attempt in range(5):
            try:
                await self.sandboxes.delete(name)
            except Exception as exc:  # retried; the sandbox's TTL is the last word
                log.warning("sandbox %s: delete failed (%s), retrying", name, exc)
                await asyncio.sleep(0.5 * (attempt + 1))
            else:
                self.deleted_total += 1
                log.info("sandbox %s deleted", name)
                return

    async def run_reaper(self, interval: float = 0.5) -> None:
        while True:
            self.reap()
            await asyncio.sleep(interval)

    async def close(self, delete_all: bool) -> None:
        """At shutdown: let the sandboxes being made finish, then delete every sandbox held
        (`delete_all`) or leave them to the next process, which adopts them."""
        visits = list(self._visits.values())
        for visit in visits if delete_all else ():
            self._forget(visit)
        for visit in visits:
            if visit.making is not None and not visit.making.done():
                with contextlib.suppress(Exception):
                    await visit.making
        await asyncio.sleep(0)  # the making's callback schedules the deletion
        while self._deletions:
            await asyncio.gather(*self._deletions, return_exceptions=True)

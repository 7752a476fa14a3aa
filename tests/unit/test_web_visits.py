"""tuxio-web's visits: one sandbox per session, the grace clock, a visitor leaving mid-making,
a failed making cleaned up by its label. The SDK adapter is replaced by a recorder here (the
real one is exercised end to end in tests/e2e/test_web.py)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from tuxio.web.admission import Admission, Queued
from tuxio.web.ratelimit import RateLimiter
from tuxio.web.sandboxes import Owned, VisitorSandbox
from tuxio.web.visits import Admitted, Failed, Limited, Visits


@dataclass
class Made:
    name: str
    namespace: str = "web"


@dataclass
class Recorder:
    """Sandboxes made when `release` is set; every call recorded."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    fail: bool = False
    made: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    labelled: dict[str, str] = field(default_factory=dict)  # name -> session

    async def create(self, *, client_ip: str, session: str, terminal: str) -> VisitorSandbox:
        name = f"visitor-{len(self.made)}"
        self.made.append(name)
        self.labelled[name] = session
        await self.release.wait()
        if self.fail:
            raise RuntimeError("not Ready in time")
        return Made(name)

    async def get(self, name: str) -> VisitorSandbox:
        return Made(name)

    async def token(self, sandbox: VisitorSandbox) -> str:
        return f"token-for-{sandbox.name}"

    async def delete(self, name: str) -> None:
        self.deleted.append(name)
        self.labelled.pop(name, None)

    async def owned(self) -> list[Owned]:
        return [Owned(n, s, "t", "") for n, s in self.labelled.items()]

    async def hosts(self) -> list[dict[str, Any]]:
        return []

    async def close(self) -> None:
        pass


def visits(recorder: Recorder, now: list[float], cap: int = 10) -> Visits:
    admission = Admission(10, 15, clock=lambda: now[0])
    admission.cap = cap
    limiter = RateLimiter(60, 2, clock=lambda: now[0])
    return Visits(recorder, admission, limiter, "web", grace_seconds=5, ttl_seconds=100,
                  clock=lambda: now[0])  # fmt: skip


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_one_sandbox_per_session_and_the_grace_clock() -> None:
    now, recorder = [0.0], Recorder()
    site = visits(recorder, now)
    recorder.release.set()
    first = await site.enter("s1", "203.0.113.7")
    assert isinstance(first, Admitted) and not first.resumed
    again = await site.enter("s1", "203.0.113.7")
    assert isinstance(again, Admitted) and again.resumed and again.name == first.name
    assert again.terminal == first.terminal and recorder.made == ["visitor-0"]
    assert site.tab_opened("s1")
    now[0] = 50.0
    assert site.reap() == []  # a tab is open
    site.tab_closed("s1")
    now[0] = 54.0
    assert site.reap() == []
    now[0] = 55.0
    assert site.reap() == ["s1"]
    await settle()
    assert recorder.deleted == ["visitor-0"] and site.active == 0


async def test_a_slow_making_does_not_use_up_the_grace_period() -> None:
    now, recorder = [0.0], Recorder()
    site = visits(recorder, now)
    entering = asyncio.create_task(site.enter("s1", "203.0.113.7"))
    await settle()
    now[0] = 30.0  # the making takes far longer than the grace period
    assert site.reap() == []
    recorder.release.set()
    assert isinstance(await entering, Admitted)
    now[0] = 34.0
    assert site.reap() == []  # the page has the grace period to attach its tab
    assert site.tab_opened("s1")


async def test_a_visitor_leaving_mid_making_leaves_no_sandbox_behind() -> None:
    now, recorder = [0.0], Recorder()
    site = visits(recorder, now)
    entering = asyncio.create_task(site.enter("s1", "203.0.113.7"))
    await settle()
    entering.cancel()  # the visitor's request went away
    await settle()
    recorder.release.set()
    await settle()
    assert recorder.made == ["visitor-0"] and recorder.deleted == []  # made all the same
    now[0] = 5.0
    assert site.reap() == ["s1"]  # and nobody came: deleted after the grace period
    await settle()
    assert recorder.deleted == ["visitor-0"]


async def test_a_failed_making_is_found_by_its_label_and_deleted() -> None:
    now, recorder = [0.0], Recorder(fail=True)
    site = visits(recorder, now)
    recorder.release.set()
    outcome = await site.enter("s1", "203.0.113.7")
    assert isinstance(outcome, Failed) and outcome.retry_after > 0
    await settle()
    assert recorder.deleted == ["visitor-0"] and site.active == 0


async def test_rate_limit_and_cap_turn_visitors_away_without_a_sandbox() -> None:
    now, recorder = [0.0], Recorder()
    site = visits(recorder, now, cap=2)
    recorder.release.set()
    assert isinstance(await site.enter("a", "198.51.100.1"), Admitted)
    assert isinstance(await site.enter("b", "198.51.100.1"), Admitted)
    assert isinstance(await site.enter("c", "198.51.100.1"), Limited)  # burst of 2 used
    assert await site.enter("d", "198.51.100.2") == Queued(1, 2.0)  # cap of 2 reached
    assert recorder.made == ["visitor-0", "visitor-1"]
    now[0] = 5.0
    site.reap()  # a and b had no tab: freed
    await settle()
    assert isinstance(await site.enter("d", "198.51.100.2"), Admitted)  # first in line


async def test_close_deletes_everything_when_asked() -> None:
    now, recorder = [0.0], Recorder()
    site = visits(recorder, now)
    recorder.release.set()
    await site.enter("a", "198.51.100.1")
    await site.enter("b", "198.51.100.2")
    await site.close(delete_all=True)
    assert sorted(recorder.deleted) == ["visitor-0", "visitor-1"]

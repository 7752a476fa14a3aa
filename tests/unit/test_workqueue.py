"""The work queue: newest work only, one at a time per key, retries, forgetting."""

from __future__ import annotations

import asyncio

import pytest

from tuxio.operator.backoff import Backoff
from tuxio.operator.errors import RequeueAfter, TerminalError
from tuxio.operator.sandbox_status import needs_reconcile
from tuxio.operator.workqueue import WorkQueue


async def settle(queue: WorkQueue, timeout: float = 30.0) -> None:
    """Until the queue has no work left (no task for any key): then nothing more can run."""
    deadline = asyncio.get_running_loop().time() + timeout
    while len(queue):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"the queue did not settle within {timeout}s")
        await asyncio.sleep(0.005)


async def test_newest_work_only_and_one_at_a_time() -> None:
    queue = WorkQueue()
    ran: list[str] = []
    gate = asyncio.Event()
    running = 0

    def job(label: str):  # type: ignore[no-untyped-def]
        async def work(failures: int) -> None:
            nonlocal running
            running += 1
            assert running == 1, "two reconciliations of one key at once"
            if label == "first":
                await gate.wait()
            ran.append(label)
            running -= 1

        return work

    queue.add("k", job("first"))
    await asyncio.sleep(0)
    queue.add("k", job("second"))  # waits for "first"
    queue.add("k", job("third"))  # replaces "second", which never runs
    gate.set()
    await settle(queue)
    assert ran == ["first", "third"]


async def test_temporary_errors_are_retried_with_their_delay() -> None:
    queue = WorkQueue(Backoff(first=0.01))
    attempts: list[int] = []

    async def work(failures: int) -> None:
        attempts.append(failures)
        if len(attempts) < 3:
            raise RequeueAfter("not yet", delay=0.01)

    queue.add("k", work)
    await settle(queue)
    assert attempts == [0, 1, 2]


async def test_permanent_errors_wait_for_new_work() -> None:
    queue = WorkQueue(Backoff(first=0.01))
    attempts = 0

    async def work(failures: int) -> None:
        nonlocal attempts
        attempts += 1
        raise TerminalError("never")

    queue.add("k", work)
    await settle(queue)  # no task is left for the key: nothing will run it again
    assert attempts == 1


async def test_forget_stops_retries() -> None:
    queue = WorkQueue()
    attempts = 0
    failed = asyncio.Event()

    async def work(failures: int) -> None:
        nonlocal attempts
        attempts += 1
        failed.set()
        raise RequeueAfter("later", delay=60)

    queue.add("k", work)
    await failed.wait()
    queue.forget("k")  # being deleted: no retry in a minute
    await settle(queue)
    assert attempts == 1
    assert not len(queue)


async def test_newer_work_cuts_a_retry_delay_short() -> None:
    queue = WorkQueue()
    ran: list[str] = []

    failed = asyncio.Event()

    async def failing(failures: int) -> None:
        ran.append("failing")
        failed.set()
        raise RequeueAfter("later", delay=60)

    async def fixed(failures: int) -> None:
        ran.append(f"fixed after {failures}")

    queue.add("k", failing)
    await failed.wait()
    queue.add("k", fixed)  # a spec change: reconcile now, not in a minute
    await settle(queue)
    assert ran == ["failing", "fixed after 1"]


@pytest.mark.parametrize(
    ("meta", "status", "wanted"),
    [
        ({"generation": 1}, {}, True),  # new: to place
        ({"generation": 1}, {"host": "h", "observedGeneration": 1}, False),  # settled
        ({"generation": 2}, {"host": "h", "observedGeneration": 1}, True),  # spec changed
        ({"generation": 1}, {"phase": "Pending", "observedGeneration": 1}, True),  # no host yet
        # Failed before any agent answered (no host in status): settled, until the spec changes.
        ({"generation": 1}, {"phase": "Failed", "observedGeneration": 1}, False),
        ({"generation": 2}, {"phase": "Failed", "observedGeneration": 1}, True),
        ({"generation": 1}, {"phase": "Scheduled"}, True),  # an agent unreachable: retried
        ({"generation": 1, "deletionTimestamp": "2026-12-01T00:00:00Z"}, {}, False),
    ],
)
def test_needs_reconcile(meta: dict[str, object], status: dict[str, object], wanted: bool) -> None:
    assert needs_reconcile({"metadata": meta, "status": status}) is wanted


async def test_drop_discards_work_not_started() -> None:
    queue = WorkQueue()
    ran: list[str] = []
    gate = asyncio.Event()

    async def first(failures: int) -> None:
        await gate.wait()
        ran.append("first")

    async def stale(failures: int) -> None:
        ran.append("stale")

    queue.add("k", first)
    await asyncio.sleep(0)
    queue.add("k", stale)  # an older body, queued behind the running reconciliation
    queue.drop("k")  # the newest state says: nothing to do
    gate.set()
    await settle(queue)
    assert ran == ["first"]

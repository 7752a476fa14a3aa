"""The per-host ledger the scheduler reads: kept entry by entry, equal to a full recount."""

from __future__ import annotations

import random

from tuxio.operator.index import AssumeCache, Ledger, SandboxBook
from tuxio.operator.records import Placed
from tuxio.operator.scheduling import Allocation


def placed(
    uid: str, host: str, memory: int, cpus: int, phase: str = "Running", disk: int = 0
) -> Placed:
    return Placed(
        uid=uid,
        namespace="ns",
        name=uid,
        host=host,
        container=f"c-{uid}",
        phase=phase,
        state="Running",
        restart_policy="Always",
        memory_bytes=memory,
        cpus=cpus,
        usage_observed_at=None,
        deleting=False,
        disk_bytes=disk,
    )


def recount(entries: dict[str, Placed]) -> dict[str, Allocation]:
    totals: dict[str, list[int]] = {}
    for entry in entries.values():
        if entry.phase == "Failed":
            continue
        total = totals.setdefault(entry.host, [0, 0, 0, 0])
        total[0] += 1
        total[1] += entry.memory_bytes
        total[2] += entry.cpus
        total[3] += entry.disk_bytes
    return {host: Allocation(*total) for host, total in totals.items()}


def test_random_updates_match_a_recount() -> None:
    rng = random.Random(7)
    ledger, truth = Ledger(), {}
    for step in range(5000):
        uid = f"u{rng.randrange(300)}"
        action = rng.random()
        if action < 0.15:
            ledger.discard(uid)
            truth.pop(uid, None)
        elif action < 0.2:
            ledger.set(uid, None)  # status lost its host
            truth.pop(uid, None)
        else:
            phase = "Failed" if rng.random() < 0.1 else "Running"
            entry = placed(
                uid, f"h{rng.randrange(5)}", rng.randrange(1, 9) << 20, rng.randrange(1, 4), phase
            )
            ledger.set(uid, entry)
            truth[uid] = entry
        if step % 250 == 0:
            assert ledger.totals() == recount(truth)
    assert ledger.totals() == recount(truth)
    assert len(ledger) == sum(1 for e in truth.values() if e.phase != "Failed")


def test_assumed_placements_count_until_seen() -> None:
    clock = [0.0]
    ledger, assumed = Ledger(), AssumeCache(lambda: clock[0], ttl=60)
    ledger.set("a", placed("a", "h1", 100, 1))
    assumed.assume("b", "h1", Allocation.of(50, 2))
    assumed.assume("c", "h2", Allocation.of(10, 1))
    assert assumed.allocations(ledger) == {"h1": Allocation(2, 150, 3), "h2": Allocation(1, 10, 1)}
    ledger.set("b", placed("b", "h1", 50, 2))  # the watch brought it back: counted once
    assert assumed.allocations(ledger)["h1"] == Allocation(2, 150, 3)
    ledger.discard("a")
    assert assumed.allocations(ledger)["h1"] == Allocation(1, 50, 2)
    assert ledger.totals() == {"h1": Allocation(1, 50, 2)}  # reads change no ledger
    clock[0] = 61  # never seen back (the write was lost): forgotten after its ttl
    assert "h2" not in assumed.allocations(ledger)


def test_the_decision_is_read_from_the_annotation_until_status_has_it() -> None:
    import json

    from tuxio.operator.labels import ASSIGNMENT
    from tuxio.operator.records import assignment_of, placed_of

    decided = {"host": "h1", "containerName": "pool-1", "template": "busybox", "fromPool": "p"}
    body = {
        "metadata": {"annotations": {ASSIGNMENT: json.dumps(decided)}},
        "spec": {"poolRef": {"name": "p"}, "resources": {"memory": "256Mi", "cpus": 2}},
        "status": {"conditions": []},
    }
    assert assignment_of(body) == decided
    seen = placed_of("u1", "ns", "s", body)
    assert seen is not None and (seen.host, seen.container, seen.cpus) == ("h1", "pool-1", 2)
    assert seen.memory_bytes == 256 << 20
    # Status, once written, is what counts.
    body["status"] = {"host": "h2", "containerName": "pool-1", "phase": "Running"}
    assert assignment_of(body)["host"] == "h2"
    assert placed_of("u1", "ns", "s", body).host == "h2"  # type: ignore[union-attr]
    # Nothing recorded, or a damaged annotation: not placed.
    for recorded in ({}, {ASSIGNMENT: "{not json"}, {ASSIGNMENT: '"a string"'}):
        bare = {"metadata": {"annotations": recorded}, "spec": {"template": "busybox"}}
        assert assignment_of(bare) == {}
        assert placed_of("u2", "ns", "s", bare) is None


def test_book_by_host_and_container() -> None:
    book = SandboxBook()
    book.set("a", "ns", "a", placed("a", "h1", 1, 1))
    book.set("b", "ns", "b", placed("b", "h1", 1, 1))
    book.set("u", "ns", "u", None)  # not placed: in no lookup, but known
    assert book.knows("u") and not book.names_container("c-u")
    assert sorted(p.uid for p in book.on_host("h1")) == ["a", "b"]
    assert book.names_container("c-a") and book.names_container("c-b")
    book.set("a", "ns", "a", placed("a", "h2", 1, 1))  # moved: only where it is now
    assert [p.uid for p in book.on_host("h1")] == ["b"]
    assert [p.uid for p in book.on_host("h2")] == ["a"]
    book.discard("b")
    assert book.on_host("h1") == []
    assert not book.names_container("c-b")
    assert not book.knows("b")
    assert book.names_container("c-a")
    book.discard("nobody")  # unknown: nothing happens

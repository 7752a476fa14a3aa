"""The scheduler's filter and load scorer, as tables."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tuxio.operator.scheduling import (
    Allocation,
    Cause,
    Decision,
    HostView,
    Request,
    Unschedulable,
    choose_host,
    load_score,
    reject_reason,
)

GiB = 2**30
HOST = HostView(
    name="h1",
    ready=True,
    unschedulable=False,
    templates=frozenset({"busybox", "debian"}),
    shared_cpus=6,
    memory_bytes=32 * GiB,
    labels={"disk": "ssd"},
    region="eu-west",
)
REQUEST = Request(template="busybox", cpus=2, memory_bytes=GiB)


@pytest.mark.parametrize(
    ("host", "used", "request_", "reason"),
    [
        (HOST, Allocation(), REQUEST, None),
        (replace(HOST, ready=False), Allocation(), REQUEST, "not Ready"),
        (replace(HOST, unschedulable=True), Allocation(), REQUEST, "unschedulable"),
        (HOST, Allocation(), replace(REQUEST, template="alpine"), "without template alpine"),
        (
            HOST,
            Allocation(),
            replace(REQUEST, regions=frozenset({"us-east"})),
            "outside region us-east",
        ),
        (HOST, Allocation(), replace(REQUEST, regions=frozenset({"eu-west"})), None),
        (
            HOST,
            Allocation(),
            replace(REQUEST, host_selector={"disk": "hdd"}),
            "not matching hostSelector",
        ),
        (HOST, Allocation(), replace(REQUEST, host_selector={"disk": "ssd"}), None),
        (HOST, Allocation(), replace(REQUEST, cpus=7), "with fewer than 7 shared cores"),
        (replace(HOST, max_sandboxes=3), Allocation(sandboxes=3), REQUEST, "at maxSandboxes"),
        (HOST, Allocation(memory_bytes=63 * GiB), REQUEST, None),  # 2x overcommit: 64 GiB fit
        (HOST, Allocation(memory_bytes=64 * GiB), REQUEST, "out of memory"),
        # Disk: a host that reports none is not counted; one that does is filled up to it.
        (HOST, Allocation(disk_bytes=10**6 * GiB), REQUEST, None),
        (replace(HOST, disk_bytes=10 * GiB), Allocation(disk_bytes=9 * GiB), REQUEST, None),
        (
            replace(HOST, disk_bytes=10 * GiB),
            Allocation(disk_bytes=9 * GiB),
            replace(REQUEST, disk_bytes=2 * GiB),
            "out of disk",
        ),
        # A request naming no disk takes the host's default there.
        (
            replace(HOST, disk_bytes=10 * GiB, disk_default_bytes=2 * GiB),
            Allocation(disk_bytes=9 * GiB),
            REQUEST,
            "out of disk",
        ),
        (
            replace(HOST, disk_bytes=10 * GiB),
            Allocation(disk_bytes=9 * GiB),
            replace(REQUEST, disk_bytes=GiB),
            None,
        ),
        (
            replace(HOST, disk_bytes=10 * GiB, disk_below_reserve=True),
            Allocation(),
            REQUEST,
            "below their disk reserve",
        ),
    ],
)
def test_reject_reason(
    host: HostView, used: Allocation, request_: Request, reason: str | None
) -> None:
    rejection = reject_reason(host, used, request_, memory_overcommit=2.0)
    assert (rejection.text if rejection else None) == reason


def test_emptier_host_wins() -> None:
    hosts = [replace(HOST, name="busy"), replace(HOST, name="quiet")]
    used = {"busy": Allocation(sandboxes=40, memory_bytes=20 * GiB, cpus=40)}
    decision = choose_host(hosts, used, REQUEST)
    assert isinstance(decision, Decision)
    assert decision.host == "quiet"
    assert decision.reason.startswith("least loaded; score ")
    assert decision.kind == "Load" and decision.distance_km is None


def test_loaded_host_loses_to_idle_one() -> None:
    hosts = [replace(HOST, name="a", load=5.0), replace(HOST, name="b", load=0.1)]
    decision = choose_host(hosts, {}, REQUEST)
    assert isinstance(decision, Decision)
    assert decision.host == "b"


def test_ties_go_to_the_first_name() -> None:
    hosts = [replace(HOST, name="zeta"), replace(HOST, name="alpha")]
    decision = choose_host(hosts, {}, REQUEST)
    assert isinstance(decision, Decision)
    assert decision.host == "alpha"


def test_unschedulable_counts_reasons() -> None:
    hosts = [
        replace(HOST, name="a", ready=False),
        replace(HOST, name="b", ready=False),
        replace(HOST, name="c", templates=frozenset()),
    ]
    decision = choose_host(hosts, {}, REQUEST)
    assert isinstance(decision, Unschedulable)
    assert decision.reasons == {"not Ready": 2, "without template busybox": 1}
    assert decision.causes == {Cause.NOT_READY, Cause.NO_TEMPLATE}
    assert decision.message == "no host fits: 2 not Ready, 1 without template busybox"
    assert choose_host([], {}, REQUEST).message == "no SandboxHost exists"  # type: ignore[union-attr]


def test_scorer_is_pluggable() -> None:
    hosts = [replace(HOST, name="a"), replace(HOST, name="b")]
    decision = choose_host(hosts, {}, REQUEST, scorer=lambda h, u, r: 1.0 if h.name == "b" else 0.0)
    assert isinstance(decision, Decision)
    assert decision.host == "b"


@pytest.mark.parametrize(
    ("used", "better_than"),
    [
        (Allocation(memory_bytes=GiB), Allocation(memory_bytes=8 * GiB)),
        (Allocation(cpus=2), Allocation(cpus=12)),
    ],
)
def test_load_score_prefers_less_used(used: Allocation, better_than: Allocation) -> None:
    assert load_score(HOST, used, REQUEST) > load_score(HOST, better_than, REQUEST)


def test_disk_is_a_resource_like_memory() -> None:
    """Full hosts are left out for want of disk, and say so; the one with room wins."""
    hosts = [
        replace(HOST, name="full", disk_bytes=4 * GiB),
        replace(HOST, name="low", disk_bytes=100 * GiB, disk_below_reserve=True),
        replace(HOST, name="roomy", disk_bytes=100 * GiB),
    ]
    used = {"full": Allocation(sandboxes=4, disk_bytes=4 * GiB), "roomy": Allocation()}
    decision = choose_host(hosts, used, replace(REQUEST, disk_bytes=GiB))
    assert isinstance(decision, Decision) and decision.host == "roomy"
    none_fit = choose_host(hosts[:2], used, replace(REQUEST, disk_bytes=GiB))
    assert isinstance(none_fit, Unschedulable)
    assert none_fit.reasons == {"out of disk": 1, "below their disk reserve": 1}
    assert none_fit.causes == {Cause.NO_DISK}

"""The host probe against a fake API server and a fake agent: two agent calls per probe,
usage written straight from the list answer, drift handed to the reconciler, the orphan
sweep, and a host that stops answering (NotReady, then its sandboxes Lost)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.unit.fakes import AT, SANDBOX_PATH, World, container, sandbox, world
from tuxio.operator.host_prober import HostProber, ProbeTimings
from tuxio.operator.records import Placed

LIST = ("GET", "/v1/containers")
HOST = ("GET", "/v1/host")


@pytest.fixture
async def w() -> AsyncIterator[World]:
    async for found in world():
        yield found


class Reconciles:
    """The reconciler the probe hands drifted Sandboxes to."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    async def __call__(self, namespace: str, name: str) -> None:
        self.asked.append((namespace, name))


def prober(w: World, reconciles: Reconciles) -> HostProber:
    return HostProber(
        api=w.kube,
        agents=w.agents,
        index=w.index,
        claims=w.claims,
        reconcile_sandbox=reconciles,
        events=w.events,
        clock=w.clock,
        timings=ProbeTimings(
            grace=w.grace, heartbeat_every=30.0, usage_every=30.0, orphan_grace=30.0
        ),
    )


def place(w: World, name: str, phase: str = "Running", usage_at: str | None = None) -> None:
    uid = f"uid-{name}"
    w.index.set_sandbox(
        uid,
        "ns",
        name,
        Placed(
            uid=uid,
            namespace="ns",
            name=name,
            host="h1",
            container=f"sbx-{uid}",
            phase=phase,
            state="Running",
            restart_policy="Always",
            memory_bytes=256 * 2**20,
            cpus=1,
            usage_observed_at=usage_at,
            deleting=False,
        ),
    )


def run(w: World, name: str, state: str = "running") -> None:
    uid = f"uid-{name}"
    labels = {"tux.io/sandbox-uid": uid, "tux.io/managed-by": "tuxio-operator"}
    w.agent.containers[f"sbx-{uid}"] = container(
        f"sbx-{uid}", {"template": "busybox", "labels": labels}, state
    )


async def test_one_probe_asks_the_agent_twice_and_writes_only_usage_due(w: World) -> None:
    host = w.add_host("h1")
    for name in ("due", "fresh"):
        run(w, name)
    place(w, "due", usage_at="2026-03-01T11:59:00Z")  # 60 s old: due
    place(w, "fresh", usage_at="2026-03-01T11:59:50Z")  # 10 s old: not yet
    reconciles = Reconciles()

    status = await prober(w, reconciles).probe(host, {})

    assert w.agent.calls() == [HOST, LIST]
    assert w.agent.seen[1].query == {"label": ["tux.io/managed-by=tuxio-operator"]}
    assert w.api.calls() == [
        ("GET", "/api/v1/namespaces/tuxio-system/secrets/agent"),
        ("PATCH", f"{SANDBOX_PATH}/due/status"),
    ]
    assert w.api.seen[1].body == {
        "status": {"usage": {"cpuSeconds": 1.5, "memoryBytes": 1000, "pids": 3, "observedAt": AT}}
    }
    assert reconciles.asked == []
    assert status["heartbeat"] == AT
    assert status["allocation"] == {
        "sandboxes": 2,
        "memoryBytes": 512 * 2**20,
        # Neither names a disk limit: each is counted as the 1Gi default.
        "diskBytes": 2 * 2**30,
        "containers": 2,
        "running": 2,
    }
    assert status["templates"] == ["busybox"]
    ((_, state, reason, _),) = [tuple(c.values())[:4] for c in status["conditions"]]
    assert (state, reason) == ("True", "AgentReady")


@pytest.mark.parametrize(
    ("phase", "seen", "reconciled"),
    [
        ("Running", "stopped", True),  # died: recreated (or failed) by the reconciler
        ("Running", None, True),  # vanished
        ("Lost", "running", True),  # the host is back
        ("Running", "running", False),
        ("Stopped", "stopped", False),
    ],
)
async def test_drift_and_returns_are_reconciled(
    w: World, phase: str, seen: str | None, reconciled: bool
) -> None:
    host = w.add_host("h1")
    place(w, "s", phase=phase, usage_at=AT)
    if seen:
        run(w, "s", seen)
    reconciles = Reconciles()
    await prober(w, reconciles).probe(host, {})
    assert reconciles.asked == ([("ns", "s")] if reconciled else [])
    assert [c for c in w.api.calls() if c[0] == "PATCH"] == []  # usage fresh: no write


@pytest.mark.parametrize(
    ("labels", "created", "swept"),
    [
        ({"tux.io/sandbox-uid": "uid-gone"}, "2026-03-01T11:00:00Z", True),
        ({"tux.io/sandbox-uid": "uid-gone"}, "2026-03-01T11:59:50Z", False),  # too young
        ({"tux.io/sandbox-uid": "uid-known"}, "2026-03-01T11:00:00Z", False),  # not placed yet
        ({"tux.io/pool-uid": "pool-gone"}, "2026-03-01T11:00:00Z", True),
        ({"tux.io/pool-uid": "pool-gone", "claimed": "yes"}, "2026-03-01T11:00:00Z", False),
        ({}, "2026-03-01T11:00:00Z", False),  # not ours to judge
    ],
)
async def test_the_orphan_sweep(
    w: World, labels: dict[str, str], created: str, swept: bool
) -> None:
    host = w.add_host("h1")
    w.index.set_sandbox("uid-known", "ns", "known", None)
    if labels.pop("claimed", None):
        w.claims.add("orphan")
    labels["tux.io/managed-by"] = "tuxio-operator"
    w.agent.containers["orphan"] = container(
        "orphan", {"template": "busybox", "labels": labels}, created=created
    )
    await prober(w, Reconciles()).probe(host, {})
    deletes = [c for c in w.agent.calls() if c[0] == "DELETE"]
    assert deletes == ([("DELETE", "/v1/containers/orphan")] if swept else [])


def silent_status(heartbeat: str) -> dict[str, Any]:
    return {"heartbeat": heartbeat, "conditions": []}


async def test_an_agent_silent_within_the_grace_changes_nothing(w: World) -> None:
    host = w.add_host("h1")
    w.agent.fail("GET", "/v1/host", 503)
    status = await prober(w, Reconciles()).probe(host, silent_status("2026-03-01T11:59:55Z"))
    assert status == {}


async def test_a_silent_agent_turns_its_host_not_ready(w: World) -> None:
    host = w.add_host("h1")
    place(w, "s")
    w.agent.fail("GET", "/v1/host", 503)
    status = await prober(w, Reconciles()).probe(host, silent_status("2026-03-01T11:59:30Z"))
    ((ready),) = status["conditions"]
    assert (ready["status"], ready["reason"]) == ("False", "AgentUnreachable")
    assert ready["message"].startswith("no answer for 30s")
    assert [c for c in w.api.calls() if c[0] == "PATCH"] == []  # not lost yet


async def test_a_lost_hosts_sandboxes_turn_lost(w: World) -> None:
    host = w.add_host("h1")
    place(w, "s")
    place(w, "failed", phase="Failed")
    w.api.sandboxes[f"{SANDBOX_PATH}/s"] = sandbox("s", "uid-s", status={"phase": "Running"})
    w.agent.fail("GET", "/v1/host", 503)
    await prober(w, Reconciles()).probe(host, silent_status("2026-03-01T11:58:00Z"))
    assert w.api.calls()[-2:] == [
        ("GET", f"{SANDBOX_PATH}/s"),
        ("PATCH", f"{SANDBOX_PATH}/s/status"),
    ]
    status = w.api.seen[-1].body["status"]
    assert status["phase"] == "Lost"
    (ready,) = status["conditions"]
    assert (ready["reason"], ready["message"]) == ("HostLost", "h1 has not answered for 120s")
    assert w.events.posted == [("Warning", "HostLost", "h1 has not answered for 120s", "s")]


async def test_a_host_without_a_heartbeat_is_lost_by_the_same_rule(w: World) -> None:
    """No heartbeat ever written: the silence counts from turning NotReady plus that grace,
    as finalization counts it (tuxio.operator.host_status)."""
    record = w.add_host("h1", ready=False, not_ready_since="2026-03-01T11:59:00Z")
    place(w, "s")
    w.api.sandboxes[f"{SANDBOX_PATH}/s"] = sandbox("s", "uid-s")
    w.agent.fail("GET", "/v1/host", 503)
    await prober(w, Reconciles()).probe(record, {"conditions": []})
    assert w.api.calls()[-1] == ("PATCH", f"{SANDBOX_PATH}/s/status")  # 60 + 15 s: lost


async def test_missing_credentials_make_the_host_not_ready(w: World) -> None:
    host = w.add_host("h1")
    del w.api.secrets["tuxio-system/agent"]
    status = await prober(w, Reconciles()).probe(host, {})
    ((ready),) = status["conditions"]
    assert (ready["status"], ready["reason"]) == ("False", "CredentialsMissing")
    assert w.agent.seen == []

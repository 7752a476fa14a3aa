"""The Sandbox reconciler against a fake API server and a fake agent: the exact requests of a
placement, a claim, a re-reconciliation, and of every error branch; finalization."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.fakes import AT, SANDBOX_PATH, World, container, sandbox, world
from tuxio.ledger.store import Ledger
from tuxio.operator.backoff import Backoff
from tuxio.operator.errors import RequeueAfter, TerminalError
from tuxio.operator.inventory import Warm
from tuxio.operator.labels import ASSIGNMENT, FINALIZER
from tuxio.operator.ledger_writer import LedgerWriter
from tuxio.operator.placement import ADOPT_IF_MATCH
from tuxio.operator.pool_models import SandboxPoolSpec
from tuxio.operator.records import PoolInfo
from tuxio.operator.sandbox_finalizer import SandboxFinalizer
from tuxio.operator.sandbox_reconciler import SandboxReconciler, SandboxTimings
from tuxio.operator.sandbox_status import needs_reconcile

SECRET = ("GET", "/api/v1/namespaces/tuxio-system/secrets/agent")
SPEC = {"template": "busybox", "resources": {"memory": "256Mi"}}


@pytest.fixture
async def w() -> AsyncIterator[World]:
    async for found in world():
        yield found


def reconciler(w: World) -> SandboxReconciler:
    return SandboxReconciler(
        api=w.kube,
        agents=w.agents,
        index=w.index,
        inventories=w.inventories,
        claims=w.claims,
        policy=w.policy,
        events=w.events,
        clock=w.clock,
        timings=SandboxTimings(
            backoff=w.backoff,
            unschedulable_retry=5.0,
            usage_every=30.0,
            inventory_wait=0.01,
        ),
        launches=w.launches,
    )


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[LedgerWriter]:
    writer = LedgerWriter(f"sqlite:///{tmp_path}/ledger.sqlite3", lambda _: "eu", Backoff(0.01))
    yield writer
    await writer.close()


def stored(writer: LedgerWriter) -> Ledger:
    assert writer.ledger is not None, "nothing was written"
    return writer.ledger


def finalizer(w: World, ledger: LedgerWriter, backoff: Backoff | None = None) -> SandboxFinalizer:
    return SandboxFinalizer(
        w.kube, w.agents, w.index, w.events, w.clock, backoff or w.backoff, w.grace, ledger
    )


def condition(status: dict[str, Any], type_: str) -> tuple[str, str, str]:
    found = next(c for c in status["conditions"] if c["type"] == type_)
    return found["status"], found["reason"], found["message"]


def placed_status(
    host: str = "h1", name: str = "sbx-uid-1", phase: str = "Running"
) -> dict[str, Any]:
    return {
        "phase": phase,
        "host": host,
        "containerName": name,
        "template": "busybox",
        "observedGeneration": 1,
        "cpuset": "1",
        "startedAt": "2026-03-01T11:59:59Z",
        "message": None,
        "usage": {"cpuSeconds": 1.5, "memoryBytes": 1000, "pids": 3, "observedAt": AT},
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Running",
                "message": "the container runs with its limits in force",
                "observedGeneration": 1,
                "lastTransitionTime": AT,
            }
        ],
    }


async def test_a_new_sandbox_is_recorded_before_its_container_is_made(w: World) -> None:
    w.add_host("h1")
    await reconciler(w).reconcile(sandbox(spec=SPEC))

    assert w.api.calls() == [
        ("PATCH", f"{SANDBOX_PATH}/s1"),  # the decision and the finalizer, first
        SECRET,
        ("PATCH", f"{SANDBOX_PATH}/s1/status"),
    ]
    hold, _, write = w.api.seen
    assert hold.headers["content-type"] == "application/json-patch+json"
    test, annotate, finalize = hold.body
    assert test == {"op": "test", "path": "/metadata/uid", "value": "uid-1"}
    assert (annotate["op"], annotate["path"]) == ("add", "/metadata/annotations")
    assert finalize == {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}
    decided = json.loads(annotate["value"][ASSIGNMENT])
    assert (decided["host"], decided["containerName"], decided["phase"]) == (
        "h1",
        "sbx-uid-1",
        "Scheduled",
    )
    assert condition(decided, "Scheduled")[:2] == ("True", "HostChosen")
    assert condition(decided, "Ready") == ("False", "Creating", "preparing the container on h1")

    (put,) = w.agent.seen
    assert put.call == ("PUT", "/v1/containers/sbx-uid-1")
    assert put.headers["if-none-match"] == "*"  # a new container, never someone else's
    assert put.headers["authorization"] == "Bearer agent-token-0123456789"
    assert put.body["labels"] == {
        "tux.io/sandbox-uid": "uid-1",
        "tux.io/managed-by": "tuxio-operator",
    }
    assert put.body["limits"]["memory"] == 256 * 2**20

    status = write.body["status"]
    assert write.headers["content-type"] == "application/merge-patch+json"
    assert {k: status[k] for k in ("phase", "host", "containerName", "cpuset", "expiresAt")} == {
        "phase": "Running",
        "host": "h1",
        "containerName": "sbx-uid-1",
        "cpuset": "1",
        "expiresAt": None,
    }
    assert status["usage"] == {"cpuSeconds": 1.5, "memoryBytes": 1000, "pids": 3, "observedAt": AT}
    assert condition(status, "Ready")[:2] == ("True", "Running")
    assert condition(status, "Scheduled")[:2] == ("True", "HostChosen")
    ((kind, reason, message, name),) = w.events.posted
    assert (kind, reason, name) == ("Normal", "Running", "s1")
    assert message.startswith("container sbx-uid-1 on h1, cores 1; HostChosen: least loaded")
    assert w.index.sandbox_allocations()["h1"].sandboxes == 1  # assumed until the watch has it


async def test_a_claim_made_at_admission_adopts_only_the_warm_container_it_took(w: World) -> None:
    w.add_host("h1")
    decided = {
        "phase": "Scheduled",
        "host": "h1",
        "containerName": "pool-1",
        "template": "busybox",
        "fromPool": "warm",
        "conditions": [],
        ADOPT_IF_MATCH: "etag-1",
    }
    body = sandbox(
        spec={"poolRef": {"name": "warm"}},
        annotations={ASSIGNMENT: json.dumps(decided)},
        finalizers=[FINALIZER],
    )
    await reconciler(w).reconcile(body)

    assert w.api.calls() == [SECRET, ("PATCH", f"{SANDBOX_PATH}/s1/status")]  # one status write
    (put,) = w.agent.seen
    assert put.call == ("PUT", "/v1/containers/pool-1")
    assert put.headers["if-match"] == '"etag-1"'
    status = w.api.seen[1].body["status"]
    assert (status["fromPool"], status["phase"]) == ("warm", "Running")
    assert ADOPT_IF_MATCH not in status


def store_decided_claim(w: World) -> None:
    """Sandbox s1 as the API server has it: placed by an earlier attempt on warm container
    pool-1 of pool warm, the decision recorded in its assignment annotation."""
    decided = {"phase": "Scheduled", "host": "h1", "containerName": "pool-1",
               "template": "busybox", "fromPool": "warm", "conditions": []}  # fmt: skip
    w.api.sandboxes[f"{SANDBOX_PATH}/s1"] = sandbox(
        spec={"poolRef": {"name": "warm"}},
        annotations={ASSIGNMENT: json.dumps(decided)},
        finalizers=[FINALIZER],
    )


async def test_a_retry_goes_on_with_the_decision_the_failed_attempt_recorded(w: World) -> None:
    """The failed attempt claimed and adopted a warm container and recorded that on the
    Sandbox; the retry's body is from before (the watch was cut): it reads the Sandbox again
    and adopts that container, never a second one (found by the chaos suite)."""
    w.add_host("h1")
    store_decided_claim(w)
    stale = sandbox(spec={"poolRef": {"name": "warm"}})
    await reconciler(w).reconcile(stale, failures=1)
    assert w.api.calls()[0] == ("GET", f"{SANDBOX_PATH}/s1")
    assert [s.call for s in w.agent.seen if s.method == "PUT"] == [("PUT", "/v1/containers/pool-1")]
    assert w.api.seen[-1].body["status"]["containerName"] == "pool-1"


async def test_a_retry_of_a_sandbox_deleted_meanwhile_does_nothing(w: World) -> None:
    w.add_host("h1")
    await reconciler(w).reconcile(sandbox(), failures=1)
    assert w.api.calls() == [("GET", f"{SANDBOX_PATH}/s1")]
    assert w.agent.seen == []


async def test_a_settled_sandbox_is_put_again_and_not_written(w: World) -> None:
    w.add_host("h1")
    body = sandbox(status=placed_status(), finalizers=[FINALIZER])
    await reconciler(w).reconcile(body)
    assert w.api.calls() == [SECRET]  # nothing changed: no status write
    (put,) = w.agent.seen
    assert put.call == ("PUT", "/v1/containers/sbx-uid-1")
    assert "if-match" not in put.headers and "if-none-match" not in put.headers
    assert w.events.posted == []


async def test_no_host_fits_pending_and_retried(w: World) -> None:
    with pytest.raises(RequeueAfter) as caught:
        await reconciler(w).reconcile(sandbox())
    assert caught.value.delay == 5.0
    ((method, path),) = w.api.calls()
    assert (method, path) == ("PATCH", f"{SANDBOX_PATH}/s1/status")
    status = w.api.seen[0].body["status"]
    assert (status["phase"], status["observedGeneration"]) == ("Pending", 1)
    assert condition(status, "Scheduled") == ("False", "Unschedulable", "no SandboxHost exists")
    assert w.agent.seen == []


async def test_a_missing_pool_is_pending_and_retried(w: World) -> None:
    w.add_host("h1")
    with pytest.raises(RequeueAfter) as caught:
        await reconciler(w).reconcile(sandbox(spec={"poolRef": {"name": "nope"}}))
    assert caught.value.delay == 2
    status = w.api.seen[0].body["status"]
    assert status["phase"] == "Pending" and "observedGeneration" not in status
    assert condition(status, "Scheduled") == (
        "False",
        "PoolMissing",
        "SandboxPool nope does not exist",
    )


async def test_an_empty_pool_falls_back_to_a_cold_create(w: World) -> None:
    w.add_host("h1")
    pool = PoolInfo("p-uid", "ns", "warm", SandboxPoolSpec.model_validate({"template": "busybox"}))
    w.index.set_pool(pool)
    w.inventories.open(pool.uid, "ns", "warm").loaded.set()
    await reconciler(w).reconcile(sandbox(spec={"poolRef": {"name": "warm"}}))
    status = w.api.seen[-1].body["status"]
    assert status["fromPool"] is None and status["containerName"] == "sbx-uid-1"
    reason, message = condition(status, "Scheduled")[1:]
    assert reason == "PoolEmpty"
    assert message.startswith("pool warm had no warm container: created cold; least loaded")


async def test_a_spec_the_agent_refuses_fails_the_sandbox(w: World) -> None:
    w.add_host("h1")
    refusal = {"reason": "InvalidSpec", "message": "limits.cpus is 3 but this host shares 1"}
    w.agent.fail("PUT", "/v1/containers/sbx-uid-1", 422, refusal)
    with pytest.raises(TerminalError):
        await reconciler(w).reconcile(sandbox())
    status = w.api.seen[-1].body["status"]
    assert (status["phase"], status["message"]) == ("Failed", refusal["message"])
    # No container was made: status names none (the annotation keeps the decision, for the
    # finalizer to look on that host).
    assert "host" not in status and "containerName" not in status
    assert condition(status, "Ready") == ("False", "AgentRejected", refusal["message"])
    assert not needs_reconcile({**sandbox(), "status": status})  # settled: not asked again
    assert [(k, r) for k, r, _, _ in w.events.posted] == [("Warning", "AgentRejected")]


async def test_an_unreachable_agent_is_retried_with_backoff(w: World) -> None:
    w.add_host("h1")
    w.agent.fail("PUT", "/v1/containers/sbx-uid-1", 503)
    w.api.sandboxes[f"{SANDBOX_PATH}/s1"] = sandbox()
    with pytest.raises(RequeueAfter) as caught:
        await reconciler(w).reconcile(sandbox(), failures=3)
    assert caught.value.delay == w.backoff.delay(3) == 16.0
    status = w.api.seen[-1].body["status"]
    assert status["phase"] == "Scheduled"
    # Not placed in status until the agent has answered for it (the next run must still PUT
    # with a precondition: see the test after this one).
    assert "host" not in status and "containerName" not in status
    assert condition(status, "Ready")[:2] == ("False", "AgentUnreachable")
    # Not settled: the watch event of this very write must queue the Sandbox again (it
    # said observedGeneration once, and the event dropped the retry; found by the chaos
    # suite: Sandboxes left Scheduled for good after an agent restart).
    assert "observedGeneration" not in status
    assert needs_reconcile({**sandbox(), "status": status})


async def test_an_adoption_cut_short_is_retried_with_its_precondition(w: World) -> None:
    """The agent did not answer the adoption of a claimed warm container: the retry still
    adopts it only If-Match its ETag, and, when another claim adopted it meanwhile, places
    the Sandbox again instead of taking it over (found by make test-slow: status had recorded
    the placement with the failure, the retry took it for its own and PUT it plainly: one
    container, two Sandboxes)."""
    w.add_host("h1")
    decided = {"phase": "Scheduled", "host": "h1", "containerName": "pool-1",
               "template": "busybox", "fromPool": "warm", "conditions": [],
               ADOPT_IF_MATCH: "etag-1"}  # fmt: skip
    body = sandbox(
        spec={"poolRef": {"name": "warm"}},
        annotations={ASSIGNMENT: json.dumps(decided)},
        finalizers=[FINALIZER],
    )
    w.api.sandboxes[f"{SANDBOX_PATH}/s1"] = body
    w.agent.fail("PUT", "/v1/containers/pool-1", 503)
    with pytest.raises(RequeueAfter):
        await reconciler(w).reconcile(body)
    written = w.api.seen[-1].body["status"]
    assert "host" not in written and "containerName" not in written
    # What the next run reads: the annotation and the status this run wrote.
    w.api.sandboxes[f"{SANDBOX_PATH}/s1"] = {**body, "status": written}
    theirs = {"template": "busybox", "labels": {"tux.io/sandbox-uid": "uid-2"}}
    w.agent.containers["pool-1"] = container("pool-1", theirs)
    w.agent.fail("PUT", "/v1/containers/pool-1", 412, {"reason": "PreconditionFailed"})
    w.agent.clear()
    with pytest.raises(RequeueAfter):  # no host left to place it on: h1 is the pool's only
        await reconciler(w).reconcile({**body, "status": written}, failures=1)
    put, look = w.agent.seen[:2]
    assert (put.call, put.headers["if-match"]) == (("PUT", "/v1/containers/pool-1"), '"etag-1"')
    assert look.call == ("GET", "/v1/containers/pool-1")
    assert all(
        s.headers.get("if-match") or s.headers.get("if-none-match")
        for s in w.agent.seen
        if s.method == "PUT"
    )  # never a PUT without a precondition
    assert w.agent.containers["pool-1"]["labels"] == theirs["labels"]


async def test_a_412_for_its_own_container_is_an_earlier_runs_work(w: World) -> None:
    w.add_host("h1")
    own = container("sbx-uid-1", {"template": "busybox", "labels": {"tux.io/sandbox-uid": "uid-1"}})
    w.agent.containers["sbx-uid-1"] = own
    w.agent.fail(
        "PUT",
        "/v1/containers/sbx-uid-1",
        412,
        {"reason": "PreconditionFailed", "message": "exists"},
    )
    await reconciler(w).reconcile(sandbox())
    first, look, again = w.agent.seen
    assert (first.call, first.headers["if-none-match"]) == (
        ("PUT", "/v1/containers/sbx-uid-1"),
        "*",
    )
    assert look.call == ("GET", "/v1/containers/sbx-uid-1")
    assert again.call == ("PUT", "/v1/containers/sbx-uid-1")
    assert "if-none-match" not in again.headers
    assert w.api.seen[-1].body["status"]["phase"] == "Running"


async def test_another_sandboxs_container_is_never_taken_over(w: World) -> None:
    w.add_host("h1")
    theirs = container(
        "sbx-uid-1", {"template": "busybox", "labels": {"tux.io/sandbox-uid": "uid-2"}}
    )
    w.agent.containers["sbx-uid-1"] = theirs
    refusal = {"reason": "PreconditionFailed", "message": "exists"}
    w.agent.fail("PUT", "/v1/containers/sbx-uid-1", 412, refusal, times=3)
    with pytest.raises(RequeueAfter) as caught:
        await reconciler(w).reconcile(sandbox())
    assert caught.value.delay == 1
    assert [s.call[0] for s in w.agent.seen] == [
        "PUT",
        "GET",
    ] * 3  # never a PUT without If-None-Match
    holds = [s.body for s in w.api.seen if s.call == ("PATCH", f"{SANDBOX_PATH}/s1")]
    assert len(holds) == 3  # each new decision recorded before the agent is asked again
    assert all(op["path"] != "/metadata/finalizers" for op in holds[1])  # held once only
    assert w.agent.containers["sbx-uid-1"] == theirs


async def test_a_sandbox_whose_host_is_gone_is_lost(w: World) -> None:
    body = sandbox(status=placed_status(host="gone"), finalizers=[FINALIZER], generation=2)
    with pytest.raises(TerminalError):
        await reconciler(w).reconcile(body)
    status = w.api.seen[-1].body["status"]
    assert (status["phase"], status["observedGeneration"]) == ("Lost", 2)
    assert condition(status, "Ready") == ("False", "HostGone", "SandboxHost gone no longer exists")
    assert w.agent.seen == []


@pytest.mark.parametrize(
    ("seen", "reason", "message"),
    [
        (None, "ContainerVanished", "the container is gone from its host"),
        ("stopped", "ContainerDied", "the container is stopped"),
    ],
)
async def test_restart_policy_never_fails_a_dead_container(
    w: World, seen: str | None, reason: str, message: str
) -> None:
    w.add_host("h1")
    if seen:
        w.agent.containers["sbx-uid-1"] = container("sbx-uid-1", {"template": "busybox"}, seen)
    body = sandbox(
        spec={"template": "busybox", "restartPolicy": "Never"},
        status=placed_status(),
        finalizers=[FINALIZER],
        generation=2,
    )
    with pytest.raises(TerminalError, match=message):
        await reconciler(w).reconcile(body)
    assert [s.call for s in w.agent.seen] == [("GET", "/v1/containers/sbx-uid-1")]  # no PUT
    status = w.api.seen[-1].body["status"]
    assert (status["phase"], status["message"]) == ("Failed", message)
    assert condition(status, "Ready") == ("False", reason, f"{message} and restartPolicy is Never")
    assert w.events.posted == [("Warning", reason, message, "s1")]


# ----- deletion ---------------------------------------------------------------------------


def deleted(status: dict[str, Any] | None = None) -> dict[str, Any]:
    body = sandbox(status=status or placed_status(name="c1"), finalizers=[FINALIZER, "other"])
    body["metadata"]["deletionTimestamp"] = AT
    return body


def ours(name: str) -> dict[str, Any]:
    return container(name, {"template": "busybox", "labels": {"tux.io/sandbox-uid": "uid-1"}})


async def test_finalize_records_the_final_counters_then_destroys_the_container(
    w: World, ledger: LedgerWriter
) -> None:
    w.add_host("h1")
    w.agent.containers["c1"] = ours("c1")
    await finalizer(w, ledger).finalize(deleted())
    assert w.agent.calls() == [("GET", "/v1/containers/c1"), ("DELETE", "/v1/containers/c1")]
    assert w.events.posted == [("Normal", "Deleted", "container c1 destroyed on h1", "s1")]
    (row,) = stored(ledger).sandboxes()
    assert (row["uid"], row["host"], row["region"], row["template"]) == (
        "uid-1",
        "h1",
        "eu",
        "busybox",
    )
    assert (row["cpu_seconds"], row["memory_peak_bytes"]) == (1.5, 2000)  # the agent's answer
    assert [name for _, name, _ in stored(ledger).events()] == ["created", "ready", "deleted"]


async def test_finalize_again_after_the_container_went_keeps_the_counters(
    w: World, ledger: LedgerWriter
) -> None:
    """A finalizer killed after the destroy, before it let go, runs again: the container is
    gone, the ledger keeps the counters the first run wrote, and counts the sandbox once."""
    w.add_host("h1")
    w.agent.containers["c1"] = ours("c1")
    await finalizer(w, ledger).finalize(deleted())
    await finalizer(w, ledger).finalize(deleted())
    (row,) = stored(ledger).sandboxes()
    assert (row["cpu_seconds"], row["memory_peak_bytes"]) == (1.5, 2000)
    assert stored(ledger).counts() == (1, 3)


@pytest.mark.parametrize("owner", ["uid-2", None])
async def test_finalize_leaves_a_container_that_is_not_its_own(
    w: World, ledger: LedgerWriter, owner: str | None
) -> None:
    """Deleted before its agent answered for it, a Sandbox names its container only in the
    decision (the annotation): a warm container another claim may have adopted since (or
    still the pool's). It is left to its owner, never destroyed (found by make test-slow:
    both Sandboxes of one container destroyed it)."""
    w.add_host("h1")
    labels = {"tux.io/pool-uid": "p-uid"} if owner is None else {"tux.io/sandbox-uid": owner}
    w.agent.containers["pool-1"] = container("pool-1", {"template": "busybox", "labels": labels})
    decided = {"phase": "Scheduled", "host": "h1", "containerName": "pool-1",
               "template": "busybox", "fromPool": "warm", "conditions": []}  # fmt: skip
    body = sandbox(annotations={ASSIGNMENT: json.dumps(decided)}, finalizers=[FINALIZER])
    body["metadata"]["deletionTimestamp"] = AT
    await finalizer(w, ledger).finalize(body)
    assert w.agent.calls() == [("GET", "/v1/containers/pool-1")]
    assert "pool-1" in w.agent.containers
    ((kind, reason, message, _),) = w.events.posted
    assert (kind, reason) == ("Normal", "ContainerNotOurs")
    assert message.endswith("; left to it") and (owner or "a pool's") in message
    (row,) = stored(ledger).sandboxes()
    assert row["uid"] == "uid-1" and row["cpu_seconds"] is None  # not the other's counters


async def test_finalize_leaves_a_lost_hosts_container_to_the_sweep(
    w: World, ledger: LedgerWriter
) -> None:
    w.add_host("h1", ready=False, heartbeat="2026-03-01T11:58:00Z")  # 120 s: past both graces
    await finalizer(w, ledger).finalize(deleted())
    assert w.agent.seen == []
    assert w.events.posted[0][:2] == ("Warning", "HostLost")


async def test_finalize_waits_for_a_host_silent_within_its_graces(
    w: World, ledger: LedgerWriter
) -> None:
    w.add_host("h1", ready=False, heartbeat="2026-03-01T11:59:00Z")  # 60 s: NotReady, not lost
    w.agent.fail("DELETE", "/v1/containers/c1", 503)
    with pytest.raises(RequeueAfter) as caught:
        await finalizer(w, ledger).finalize(deleted(), failures=1)
    assert caught.value.delay == 4.0
    assert w.agent.calls() == [("GET", "/v1/containers/c1"), ("DELETE", "/v1/containers/c1")]


async def test_finalize_and_release_drops_only_our_finalizer(
    w: World, ledger: LedgerWriter
) -> None:
    w.add_host("h1")
    body = deleted()
    body["metadata"]["resourceVersion"] = "9"
    w.api.sandboxes[f"{SANDBOX_PATH}/s1"] = body
    await finalizer(w, ledger).finalize_and_release(body)
    assert w.agent.calls() == [("GET", "/v1/containers/c1"), ("DELETE", "/v1/containers/c1")]
    get, patch = w.api.seen[-2:]
    assert get.call == ("GET", f"{SANDBOX_PATH}/s1")
    assert patch.call == ("PATCH", f"{SANDBOX_PATH}/s1")
    assert patch.body == {"metadata": {"resourceVersion": "9", "finalizers": ["other"]}}


async def test_finalize_and_release_retries_until_done(w: World, ledger: LedgerWriter) -> None:
    w.add_host("h1")
    body = deleted()
    w.api.sandboxes[f"{SANDBOX_PATH}/s1"] = body
    w.agent.fail("DELETE", "/v1/containers/c1", 503)
    fast = finalizer(w, ledger, Backoff(first=0.01))
    await fast.finalize_and_release(body)
    assert w.agent.calls() == [("GET", "/v1/containers/c1"), ("DELETE", "/v1/containers/c1")] * 2
    assert w.api.calls()[-1] == ("PATCH", f"{SANDBOX_PATH}/s1")


async def test_a_claim_whose_decision_was_not_stored_is_given_back_on_the_retry(
    w: World,
) -> None:
    """The write of a claim's decision failed: the container is held like a claim at
    admission (the pool does not replace it), and the retry gives it back before it takes
    one again, so it takes the same one. Before, it stayed out of the pool for the claim's
    whole hold (10 minutes) while the pool made another."""
    w.add_host("h1")
    pool = PoolInfo("p-uid", "ns", "warm", SandboxPoolSpec.model_validate({"template": "busybox"}))
    w.index.set_pool(pool)
    state = w.inventories.open(pool.uid, "ns", "warm")
    for name, created in (("pool-old", "2026-01-01T00:00:00"), ("pool-new", "2026-01-02T00:00:00")):
        state.warm[name] = Warm(name, "h1", "busybox", "h", True, 64 * 2**20, 1, created=created)
    state.loaded.set()
    w.api.fail("PATCH", f"{SANDBOX_PATH}/s1", 500)
    w.api.sandboxes[f"{SANDBOX_PATH}/s1"] = sandbox(spec={"poolRef": {"name": "warm"}})
    with pytest.raises(RequeueAfter):
        await reconciler(w).reconcile(sandbox(spec={"poolRef": {"name": "warm"}}))
    assert set(state.warm) == {"pool-new"}
    assert {n: owner for n, (_, owner) in state.admitted.items()} == {"pool-old": "ns/s1"}
    assert w.agent.seen == []  # nothing was asked of the agent for a decision not stored

    await reconciler(w).reconcile(sandbox(spec={"poolRef": {"name": "warm"}}), failures=1)
    (put,) = w.agent.seen
    assert put.call == ("PUT", "/v1/containers/pool-old")
    assert set(state.warm) == {"pool-new"} and state.admitted == {}  # stored this time


async def test_a_decision_found_stored_is_no_longer_held_as_maybe_not(w: World) -> None:
    """The write raised but was stored (its answer lost): the retry finds the decision, and
    the container is not given back at the end of its hold, whether or not the index shows
    the Sandbox by then (deleted first, it would have come back as a phantom)."""
    w.add_host("h1")
    state = w.inventories.open("p-uid", "ns", "warm")
    taken = Warm("pool-1", "h1", "busybox", "h", True, 64 * 2**20, 1)
    state.admitted["pool-1"] = (taken, "ns/s1")
    store_decided_claim(w)
    await reconciler(w).reconcile(sandbox(spec={"poolRef": {"name": "warm"}}), failures=1)
    assert state.admitted == {} and state.warm == {}

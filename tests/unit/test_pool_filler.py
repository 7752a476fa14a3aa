"""The pool filler against a fake agent and a fake API server: a fill round's exact requests
(inventory read, creations, removals), why a pool cannot fill, a pool's deletion, and its
status writes."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.unit.fakes import World, container, world
from tuxio.nodeagent.models import ContainerStatus
from tuxio.operator.agentclient import AgentUnreachable
from tuxio.operator.conditions import Reason
from tuxio.operator.inventory import PoolState, warm_of
from tuxio.operator.pool_filler import PoolFiller, PoolTimings
from tuxio.operator.pool_models import SandboxPoolSpec
from tuxio.operator.pool_policy import Blocker, pool_hash

UID = "0123456789abcdef"
POOLS = "/apis/tux.io/v1alpha1/namespaces/ns/sandboxpools"


@pytest.fixture
async def w() -> AsyncIterator[World]:
    async for found in world():
        yield found


def filler(w: World, parallelism: int = 4) -> PoolFiller:
    return PoolFiller(
        api=w.kube,
        agents=w.agents,
        index=w.index,
        inventories=w.inventories,
        claims=w.claims,
        policy=w.policy,
        clock=w.clock,
        timings=PoolTimings(
            fill_parallelism=parallelism,
            refill_delay=0.25,
            refill_floor=0.25,
            status_interval=0.5,
            refresh_every=5.0,
            agent_timeout=5.0,
        ),
    )


def spec(replicas: int, template: str = "busybox") -> SandboxPoolSpec:
    return SandboxPoolSpec.model_validate({"template": template, "replicas": replicas})


def warm(w: World, name: str, template: str = "busybox", spec_hash: str | None = None) -> None:
    labels = {
        "tux.io/pool-uid": UID,
        "tux.io/pool-spec": spec_hash or pool_hash(spec(0, template)),
        "tux.io/managed-by": "tuxio-operator",
    }
    w.agent.containers[name] = container(name, {"template": template, "labels": labels})


async def settle(state: PoolState) -> None:
    if state.tasks:
        await asyncio.wait_for(asyncio.gather(*state.tasks), 10)


async def test_a_round_reads_the_inventory_then_fills_what_is_missing(w: World) -> None:
    w.add_host("h1")
    warm(w, "pool-old")
    state = w.inventories.open(UID, "ns", "p")
    assert await filler(w).sync(state, spec(3), refresh=True) is None
    await settle(state)
    listing, *creations = w.agent.seen
    assert listing.call == ("GET", "/v1/containers")
    assert listing.query == {"label": [f"tux.io/pool-uid={UID}"]}
    assert len(creations) == 2 and all(s.method == "PUT" for s in creations)
    for put in creations:
        assert put.path.startswith(f"/v1/containers/pool-{UID[:8]}-")
        assert put.body["labels"] == {
            "tux.io/pool-uid": UID,
            "tux.io/pool-spec": pool_hash(spec(3)),
            "tux.io/managed-by": "tuxio-operator",
        }
        assert "if-none-match" not in put.headers
    assert len(state.warm) == 3 and not state.inflight
    assert w.api.seen[-1].call != ("PATCH", f"{POOLS}/p/status")  # status is the loop's


async def test_a_round_removes_another_templates_containers_at_once(w: World) -> None:
    w.add_host("h1")
    warm(w, "pool-a")
    warm(w, "pool-deb", template="debian")
    state = w.inventories.open(UID, "ns", "p")
    await filler(w).sync(state, spec(1), refresh=True)
    await settle(state)
    assert w.agent.calls()[1:] == [("DELETE", "/v1/containers/pool-deb")]
    assert set(state.warm) == {"pool-a"}


async def test_creations_in_flight_are_bounded(w: World) -> None:
    w.add_host("h1")
    state = w.inventories.open(UID, "ns", "p")
    await filler(w, parallelism=2).sync(state, spec(10), refresh=True)
    assert len(state.inflight) == 2  # counted on the host until made
    assert w.index.sandbox_allocations() == {}
    await settle(state)
    assert sum(1 for c in w.agent.calls() if c[0] == "PUT") == 2


@pytest.mark.parametrize(
    ("hosts", "template", "reason"),
    [
        ({}, "busybox", Reason.NO_HOST),
        ({"templates": frozenset({"debian"})}, "busybox", Reason.TEMPLATE_MISSING),
        ({"memory_bytes": 2**20}, "busybox", Reason.NO_CAPACITY),
        ({"ready": False}, "busybox", Reason.NO_HOST),
    ],
)
async def test_why_a_pool_cannot_fill(
    w: World, hosts: dict[str, Any] | None, template: str, reason: Reason
) -> None:
    if hosts:
        w.add_host("h1", **hosts)
    state = w.inventories.open(UID, "ns", "p")
    blocker = await filler(w).sync(state, spec(2, template), refresh=True)
    assert isinstance(blocker, Blocker)
    assert blocker.reason == reason
    assert blocker.message.startswith(f"{reason}: no ")
    assert [c for c in w.agent.calls() if c[0] == "PUT"] == []


async def test_claimed_containers_never_join_the_inventory(w: World) -> None:
    w.add_host("h1")
    warm(w, "pool-a")
    warm(w, "pool-b")
    w.claims.add("pool-b")
    state = w.inventories.open(UID, "ns", "p")
    await filler(w).refresh(state)
    assert set(state.warm) == {"pool-a"} and state.loaded.is_set()


async def test_a_container_in_flight_is_claimed_once(w: World) -> None:
    """A refresh while a creation is in flight lists the new container: it stays in flight
    (not claimable) until the creation ends, and once a claim has it, the creation's end
    does not put it back (found by make test-slow: one container adopted by two Sandboxes)."""
    w.add_host("h1")
    w.agent.answer_puts = asyncio.Event()
    state = w.inventories.open(UID, "ns", "p")
    pools = filler(w)
    await pools.sync(state, spec(1), refresh=True)
    await w.agent.until(lambda: w.agent.containers)  # made on the host, not answered yet
    (name,) = w.agent.containers
    await pools.refresh(state)
    assert state.warm == {} and set(state.inflight) == {name}
    w.agent.answer_puts.set()
    await settle(state)
    assert set(state.warm) == {name} and not state.inflight  # in one step

    taken = state.take("busybox", ["h1"], 0.0)
    assert taken is not None and taken.name == name
    w.claims.add(name)
    await pools.refresh(state)
    assert state.warm == {}

    # The same, with the claim made while the creation was in flight (a refresh listed the
    # container before this fix): its end leaves it out of the pool.
    w.agent.answer_puts = asyncio.Event()
    await pools.sync(state, spec(1), refresh=False)  # the claimed one is not the pool's
    await w.agent.until(lambda: len(w.agent.containers) == 2)
    (second,) = set(w.agent.containers) - {name}
    w.claims.add(second)
    w.agent.answer_puts.set()
    await settle(state)
    assert second not in state.warm and not state.inflight


async def test_a_refresh_keeps_what_a_creation_added_while_it_listed(w: World) -> None:
    """A creation that ends while the agent's listing is on its way back (the listing read
    before the container existed) is kept: dropped, the pool made one more and then had one
    too many."""
    w.add_host("h1")
    state = w.inventories.open(UID, "ns", "p")
    pools = filler(w)
    listed = asyncio.Event()
    go_on = asyncio.Event()
    real = pools.agents.client

    async def client(host: Any) -> Any:
        agent = await real(host)
        real_list = agent.list

        async def slow_list(selector: Any) -> Any:
            found = await real_list(selector)
            listed.set()
            await go_on.wait()
            return found

        agent.list = slow_list  # type: ignore[method-assign]
        return agent

    pools.agents.client = client  # type: ignore[method-assign]
    refreshing = asyncio.create_task(pools.refresh(state))
    await listed.wait()
    made = container("pool-new", {"template": "busybox", "labels": {"tux.io/pool-uid": UID}})
    state.warm["pool-new"] = warm_of(ContainerStatus.model_validate(made), "h1")
    go_on.set()
    await refreshing
    assert set(state.warm) == {"pool-new"}


def held_client(pools: PoolFiller, host: str, reached: asyncio.Event, go_on: asyncio.Event) -> None:
    """The pool filler's agent client for `host` handed out only once `go_on` is set (and
    `reached` set as it is asked for): the filler awaits there, as on a slow network."""
    real = pools.agents.client

    async def client(record: Any) -> Any:
        if record.name == host:
            reached.set()
            await go_on.wait()
        return await real(record)

    pools.agents.client = client  # type: ignore[method-assign]


async def test_a_claim_made_while_a_later_host_is_listed_stays_out_of_the_pool(w: World) -> None:
    """h1's listing has pool-a; a claim takes it while h2 is still being listed: the refresh
    must not put it back (its second claim would lose the agent's If-Match, and the pool
    would count, and might trim, a container a Sandbox has)."""
    w.add_host("h1")
    w.add_host("h2")
    warm(w, "pool-a")
    state = w.inventories.open(UID, "ns", "p")
    pools = filler(w)
    await pools.refresh(state)  # both hosts list the one fake agent: pool-a is known
    w.agent.containers.clear()
    warm(w, "pool-a")
    reached, go_on = asyncio.Event(), asyncio.Event()
    hosts = sorted(w.index.hosts)
    held_client(pools, hosts[-1], reached, go_on)  # the host listed last
    refreshing = asyncio.create_task(pools.refresh(state))
    await reached.wait()
    taken = state.take("busybox", hosts, 0.0)
    assert taken is not None and taken.name == "pool-a"
    w.claims.add("pool-a")
    go_on.set()
    await refreshing
    assert "pool-a" not in state.warm


def failing_puts(
    w: World, times: int, error: AgentUnreachable, made: bool, tried: asyncio.Event | None = None
) -> tuple[PoolState, PoolFiller, list[str]]:
    """A pool on one host whose agent fails the first `times` PUTs with `error`, after making
    the container when `made` (its answer lost, as when it dies or restarts before it answers)
    or without (a refusal); failed creations are retried 0.01 s apart. The pool's state, its
    filler and the names asked for, in order."""
    w.add_host("h1")
    state = w.inventories.open(UID, "ns", "p")
    pools = filler(w)
    pools.timings = dataclasses.replace(pools.timings, failure_delay=0.01)
    real = pools.agents.client
    asked: list[str] = []

    async def client(record: Any) -> Any:
        agent = await real(record)  # the registry's one client for the host: wrapped once
        if not hasattr(agent, "real_put"):
            agent.real_put = agent.put

            async def put(name: str, spec: Any, **kwargs: Any) -> Any:
                asked.append(name)
                if tried is not None:
                    tried.set()
                if len(asked) > times:
                    return await agent.real_put(name, spec, **kwargs)
                if made:
                    await agent.real_put(name, spec, **kwargs)
                raise error

            agent.put = put
        return agent

    pools.agents.client = client  # type: ignore[method-assign]
    return state, pools, asked


LOST = AgentUnreachable("PUT: ServerDisconnectedError")


async def test_a_creation_whose_answer_was_lost_is_asked_for_again_by_its_name(w: World) -> None:
    """The agent made the container and its answer was lost: made again under a new name, the
    first would be a surplus to destroy at the next listing (found by the chaos suite: a pool
    that made 13 containers where it needed 12). The same name is asked for until answered."""
    state, pools, asked = failing_puts(w, 2, LOST, made=True)
    await pools.sync(state, spec(1), refresh=True)
    assert len(state.inflight) == 1
    await settle(state)
    assert len(asked) == 3 and len(set(asked)) == 1  # one name, asked for three times
    assert set(w.agent.containers) == set(asked) == set(state.warm) and not state.inflight
    await pools.sync(state, spec(1), refresh=True)
    await settle(state)
    assert len(w.agent.containers) == 1 and [c for c in w.agent.calls() if c[0] == "DELETE"] == []


async def test_a_creation_the_agent_refused_is_not_asked_for_again(w: World) -> None:
    """A 4xx (or a 507, the disk below its reserve) is an answer: the container was not made,
    and the slot frees after failure_delay for a creation under a new name."""
    refused = AgentUnreachable("PUT: 507: DiskBelowReserve", 507)
    state, pools, asked = failing_puts(w, 100, refused, made=False)
    await pools.sync(state, spec(1), refresh=True)
    await settle(state)
    assert len(asked) == 1 and not state.inflight and not state.warm


async def test_a_lost_creation_is_not_asked_for_again_once_its_pool_is_gone(w: World) -> None:
    state, pools, asked = failing_puts(w, 100, LOST, made=True)
    pools.timings = dataclasses.replace(pools.timings, failure_delay=0.2)
    await pools.sync(state, spec(1), refresh=True)
    await w.agent.until(lambda: w.agent.containers)
    w.inventories.close(UID)
    await settle(state)
    assert len(asked) == 1


async def test_a_lost_creation_is_not_asked_for_again_once_its_pool_no_longer_wants_it(
    w: World,
) -> None:
    """Scaled down while the agent was away: asked for again, the container would be made
    for the replicas before, after the pool showed it had seen the new ones."""
    tried = asyncio.Event()
    state, pools, asked = failing_puts(w, 100, LOST, made=False, tried=tried)
    pools.timings = dataclasses.replace(pools.timings, failure_delay=0.2)
    await pools.sync(state, spec(1), refresh=True)
    await asyncio.wait_for(tried.wait(), 10)  # failed, its next try 0.2 s away
    await pools.sync(state, spec(0), refresh=False)  # the round that reads the new replicas
    await settle(state)
    assert len(asked) == 1 and not state.inflight and not w.agent.containers


async def test_a_lost_creation_of_a_rollout_is_asked_for_again(w: World) -> None:
    """Counted as the fill plan counts: a container with the limits before does not make
    the pool full, so the new one whose answer was lost is still wanted."""
    state, pools, asked = failing_puts(w, 2, LOST, made=True)
    warm(w, "pool-old", spec_hash="an-older-spec")
    await pools.sync(state, spec(1), refresh=True)
    await settle(state)
    assert len(asked) == 3 and len(set(asked)) == 1
    assert set(state.warm) == {"pool-old", asked[0]}


async def test_a_container_being_removed_cannot_be_claimed(w: World) -> None:
    w.add_host("h1")
    warm(w, "pool-old", spec_hash="an-older-spec")
    state = w.inventories.open(UID, "ns", "p")
    pools = filler(w)
    await pools.refresh(state)
    reached, go_on = asyncio.Event(), asyncio.Event()
    held_client(pools, "h1", reached, go_on)
    syncing = asyncio.create_task(pools.sync(state, spec(0), refresh=False))
    await reached.wait()  # the removal is on its way to the agent
    assert state.take("busybox", ["h1"], 0.0) is None
    go_on.set()
    await syncing
    assert "pool-old" not in w.agent.containers and state.warm == {}

    # A removal the agent did not answer keeps counting the container, to be removed later.
    warm(w, "pool-old", spec_hash="an-older-spec")
    await pools.refresh(state)
    w.agent.fail("DELETE", "/v1/containers/pool-old", 503)
    await pools.sync(state, spec(0), refresh=False)
    assert set(state.warm) == {"pool-old"} and "pool-old" in w.agent.containers


async def test_a_deleted_pool_removes_its_unclaimed_containers(w: World) -> None:
    w.add_host("h1")
    warm(w, "pool-a")
    warm(w, "pool-b")
    w.index.set_sandbox(
        "uid-x", "ns", "x", None
    )  # a Sandbox not placed yet does not own a container
    w.claims.add("pool-b")
    w.inventories.open(UID, "ns", "p")
    await filler(w).remove(UID)
    assert [c for c in w.agent.calls() if c[0] == "DELETE"] == [("DELETE", "/v1/containers/pool-a")]
    assert w.inventories.get(UID) is None


async def test_the_loop_writes_status_and_stops(w: World) -> None:
    w.add_host("h1")
    warm(w, "pool-a")
    body = {
        "metadata": {"name": "p", "namespace": "ns", "uid": UID, "generation": 3},
        "spec": {"template": "busybox", "replicas": 1},
        "status": {},
    }
    stop = asyncio.Event()

    class Stopped:
        def __bool__(self) -> bool:
            return stop.is_set()

    loop = asyncio.create_task(filler(w).run(UID, "ns", "p", body, Stopped()))

    def written() -> list[dict[str, Any]]:
        return [s.body["status"] for s in w.api.seen if s.call == ("PATCH", f"{POOLS}/p/status")]

    await w.api.until(lambda: any(s.get("readyReplicas") == 1 for s in written()))
    stop.set()
    w.inventories.get(UID).wake.set()  # type: ignore[union-attr]
    await asyncio.wait_for(loop, 10)
    merged: dict[str, Any] = {}
    for status in written():
        merged.update(status)
    assert merged["replicas"] == 1 and merged["readyReplicas"] == 1
    assert merged["selector"] == f"tux.io/pool-uid={UID}"
    assert merged["observedGeneration"] == 3
    (ready,) = merged["conditions"]
    assert (ready["status"], ready["reason"]) == ("True", "Filled")
    first = written()[0]  # before the inventory is read: nothing ready yet
    assert (first["readyReplicas"], first["conditions"][0]["reason"]) == (0, "Filling")
    assert [c for c in w.agent.calls() if c[0] == "PUT"] == []  # the warm one suffices


async def test_nothing_is_made_on_a_host_whose_inventory_could_not_be_read(w: World) -> None:
    """An operator restarted while its agent is down knows none of the pool's containers
    there: "could not list" is not "none there", so it makes none until it has listed them
    (found by the chaos suite: every such restart made the pool's containers twice)."""
    w.add_host("h1")
    warm(w, "pool-a")
    w.agent.fail("GET", "/v1/containers", 503)
    state = w.inventories.open(UID, "ns", "p")
    pools = filler(w)
    assert await pools.sync(state, spec(2), refresh=True) is None
    assert [c for c in w.agent.calls() if c[0] == "PUT"] == [] and not state.inflight
    assert "h1" not in state.listed
    # The next round lists the host again, finds pool-a and makes one more, not two.
    assert await pools.sync(state, spec(2), refresh=False) is None
    assert set(state.warm) == {"pool-a"} and len(state.inflight) == 1
    await settle(state)
    assert sum(1 for c in w.agent.calls() if c[0] == "PUT") == 1

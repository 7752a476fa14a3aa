"""SandboxPools: warm containers kept running, and claims that adopt them.

A warm container is an ordinary container on some host, labelled with its pool's UID and the
hash of the pool spec it was made from. The agents are the truth about which exist; the
operator keeps an inventory per pool, refreshed from the agents, and takes containers out of
it when a Sandbox claims one. A claim is recorded in the API before the agent hears of it (in
the Sandbox's create, by the claim webhook, or in its assignment annotation), every container
a Sandbox names is out of the pool for good, and the agent adopts a warm container only while
it is still one (If-Match), so one container is never adopted twice, not even across operator
restarts.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from tuxio.nodeagent.models import ContainerSpec, ContainerStatus, Limits
from tuxio.operator.agentclient import AgentError

from .conditions import READY, Reason, condition, set_condition
from .models import Resources, SandboxPoolSpec, bytes_of, cores_of
from .runtime import CredentialsMissing, HostRecord, Runtime
from .scheduling import Allocation, HostView, Request, Unschedulable, choose_host, reject_reason

__all__ = [
    "POOL_SPEC",
    "POOL_UID",
    "PoolPlan",
    "PoolState",
    "Warm",
    "limits_of",
    "plan_pool",
    "pool_hash",
    "pool_status",
    "refill_hold",
    "remove_pool",
    "sync_pool",
]

log = logging.getLogger(__name__)

POOL_UID = "tux.io/pool-uid"
POOL_SPEC = "tux.io/pool-spec"
MANAGED_BY = "tux.io/managed-by"
OPERATOR = "tuxio-operator"


def pool_hash(spec: SandboxPoolSpec) -> str:
    """What makes a warm container current: the pool's template and limits."""
    canonical = json.dumps(
        {
            "template": spec.template,
            "resources": spec.resources.model_dump(mode="json", by_alias=True),
        },
        sort_keys=True,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def limits_of(resources: Resources) -> Limits:
    return Limits(
        cpus=resources.cpus,
        burst_cpu_seconds=resources.burst_cpu_seconds,
        memory=bytes_of(resources.memory),
        memory_swap=None if resources.memory_swap is None else bytes_of(resources.memory_swap),
        pids=resources.pids,
        nofile=resources.nofile,
        nproc=resources.nproc,
        cpu_quota=None if resources.cpu_quota is None else cores_of(resources.cpu_quota),
    )


@dataclass
class Warm:
    """One warm container, as the inventory knows it."""

    name: str
    host: str
    template: str
    spec_hash: str
    ready: bool
    memory_bytes: int
    cpus: int
    created: str = ""  # ISO 8601 from the agent: claims take the longest waiting first
    # The agent's ETag of the container as a warm one: a claim adopts it only while it still
    # has that (If-Match), so two claimants can never both get it.
    etag: str = ""


@dataclass
class PoolState:
    """The inventory of one pool, shared by its fill loop and the claims."""

    uid: str
    namespace: str
    name: str
    warm: dict[str, Warm] = field(default_factory=dict)
    loaded: asyncio.Event = field(default_factory=asyncio.Event)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    creating: int = 0
    # Warm containers being made: name -> (host, memory bytes, cpus), counted on their hosts.
    inflight: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    last_take: float = 0.0  # time.monotonic() of the last claim

    def take(self, template: str, hosts_in_order: list[str]) -> Warm | None:
        """Remove and return a ready warm container of `template`, on the first host possible
        (there, the one that has waited longest).

        Synchronous on purpose: between choosing and removing there is no await, so two claims
        in this process can never take the same container.
        """
        rank = {host: i for i, host in enumerate(hosts_in_order)}
        ready = [
            w for w in self.warm.values() if w.ready and w.template == template and w.host in rank
        ]
        if not ready:
            return None
        chosen = min(ready, key=lambda w: (rank[w.host], w.created, w.name))
        del self.warm[chosen.name]
        self.last_take = time.monotonic()
        self.wake.set()  # replenish
        return chosen


@dataclass(frozen=True)
class PoolPlan:
    """What one fill round does."""

    create: int
    delete: list[str]


def plan_pool(
    warm: Iterable[Warm],
    replicas: int,
    current_hash: str,
    template: str,
    in_flight: int,
    max_parallel: int,
) -> PoolPlan:
    """Create what is missing (bounded), delete the surplus and what is out of date. Pure.

    Containers of another template cannot serve a claim and go at once; containers with old
    limits still can (a claim applies the Sandbox's own limits anyway), so they are replaced
    only while the current ones are enough, never emptying the pool.
    """
    warm = list(warm)
    current = [w for w in warm if w.spec_hash == current_hash and w.template == template]
    wrong_template = [w for w in warm if w.template != template]
    old_limits = [w for w in warm if w.spec_hash != current_hash and w.template == template]
    missing = replicas - len(current) - in_flight
    create = max(0, min(missing, max_parallel - in_flight))
    delete = [w.name for w in wrong_template]
    surplus = len(current) + len(old_limits) - replicas
    if surplus > 0:
        # Scale down: old limits first, then not-ready, then by name (deterministic).
        candidates = old_limits + sorted(current, key=lambda w: (w.ready, w.name))
        delete += [w.name for w in candidates[:surplus]]
    return PoolPlan(create, delete)


def pool_status(
    current: Mapping[str, Any],
    state: PoolState,
    spec: SandboxPoolSpec,
    current_hash: str,
    generation: int,
    blocker: str | None,
    ready_hosts: Container[str],
) -> dict[str, Any]:
    """The pool's status. Pure. Warm containers on hosts that are not Ready do not count."""
    ready = sum(
        1
        for w in state.warm.values()
        if w.ready
        and w.spec_hash == current_hash
        and w.template == spec.template
        and w.host in ready_hosts
    )
    if ready >= spec.replicas:
        cond = condition(READY, True, "Filled", f"{ready} warm containers ready", generation)
    elif blocker:
        cond = condition(READY, False, blocker.split(":", 1)[0], blocker, generation)
    else:
        cond = condition(READY, False, "Filling", f"{ready} of {spec.replicas} ready", generation)
    return {
        "replicas": len(state.warm) + len(state.inflight),  # made, or being made
        "readyReplicas": ready,
        "selector": f"{POOL_UID}={state.uid}",
        "observedGeneration": generation,
        "conditions": set_condition(list(current.get("conditions") or []), cond),
    }


def refill_hold(
    now: float, last_take: float, delay: float, ready: int, replicas: int, floor: float
) -> float:
    """How long the refill waits for claims to pause, in seconds. Pure.

    Claims come first: a container start costs the CPU of several claims on a small host.
    But a pool whose ready containers fell below `floor` of its replicas refills at once.
    """
    if ready < floor * replicas:
        return 0.0
    return max(0.0, last_take + delay - now)


def warm_of(container: ContainerStatus, host: str) -> Warm:
    limits = container.spec.limits
    return Warm(
        name=container.name,
        host=host,
        template=container.template,
        spec_hash=container.labels.get(POOL_SPEC, ""),
        ready=container.state == "running",
        memory_bytes=limits.memory,
        cpus=limits.cpus,
        created=container.created_at.isoformat() if container.created_at else "",
        etag=container.spec_hash,
    )


async def refresh(
    rt: Runtime, state: PoolState, hosts: Mapping[str, HostRecord], claimed: Callable[[str], bool]
) -> None:
    """Rebuild the inventory from what the agents say (hosts that do not answer keep theirs)."""
    found: dict[str, Warm] = {}
    answered: set[str] = set()
    for host in hosts.values():
        if not host.view.ready:
            continue
        try:
            agent = await rt.agents.client(host)
            containers = await agent.list({POOL_UID: state.uid})
        except (AgentError, CredentialsMissing) as exc:
            log.info("pool %s/%s: cannot list %s: %s", state.namespace, state.name, host.name, exc)
            continue
        answered.add(host.name)
        for container in containers:
            if not claimed(container.name):
                found[container.name] = warm_of(container, host.name)
    kept = {n: w for n, w in state.warm.items() if w.host not in answered and w.host in hosts}
    state.warm = {**kept, **found}
    state.loaded.set()


async def _create_one(
    rt: Runtime,
    state: PoolState,
    spec: SandboxPoolSpec,
    current_hash: str,
    host: HostRecord,
    name: str,
) -> None:
    container = ContainerSpec(
        template=spec.template,
        limits=limits_of(spec.resources),
        labels={POOL_UID: state.uid, POOL_SPEC: current_hash, MANAGED_BY: OPERATOR},
    )
    try:
        agent = await rt.agents.client(host)
        made = await agent.put(name, container)
    except (AgentError, CredentialsMissing) as exc:
        log.warning(
            "pool %s/%s: warm container on %s failed: %s",
            state.namespace,
            state.name,
            host.name,
            exc,
        )
        return
    state.warm[name] = warm_of(made, host.name)


async def sync_pool(
    rt: Runtime,
    state: PoolState,
    spec: SandboxPoolSpec,
    hosts: Mapping[str, HostRecord],
    allocations: dict[str, Allocation],
    claimed: Callable[[str], bool],
    refresh_inventory: bool,
) -> str | None:
    """One fill round: returns why the pool cannot fill, or None."""
    if refresh_inventory or not state.loaded.is_set():
        await refresh(rt, state, hosts, claimed)
    current_hash = pool_hash(spec)
    # Warm containers on a host that is not Ready cannot be claimed: the pool re-warms on the
    # hosts that are, and trims the surplus once that host is back.
    usable = [w for w in state.warm.values() if w.host in hosts and hosts[w.host].view.ready]
    plan = plan_pool(
        usable,
        spec.replicas,
        current_hash,
        spec.template,
        state.creating,
        rt.settings.pool_fill_parallelism,
    )
    if plan.create or plan.delete:
        log.info(
            "pool %s/%s: %d warm (%d in flight), %d wanted: creating %d, removing %d",
            state.namespace,
            state.name,
            len(state.warm),
            state.creating,
            spec.replicas,
            plan.create,
            len(plan.delete),
        )
    for name in plan.delete:
        warm = state.warm.get(name)
        if warm is None or warm.host not in hosts:
            continue  # its host is unknown now: keep counting it until it can be removed
        try:
            agent = await rt.agents.client(hosts[warm.host])
            await agent.delete(name)
        except (AgentError, CredentialsMissing) as exc:
            log.info("pool %s/%s: cannot remove %s: %s", state.namespace, state.name, name, exc)
            continue
        state.warm.pop(name, None)
    if plan.create == 0:
        return None
    request = Request(
        template=spec.template,
        cpus=spec.resources.cpus,
        memory_bytes=bytes_of(spec.resources.memory),
        regions=frozenset(spec.placement.regions or ()),
        host_selector=spec.placement.host_selector or {},
    )
    used = dict(allocations)  # sandboxes and every pool's warm containers (Runtime.allocations)
    views = [h.view for h in hosts.values()]
    per_region = collections.Counter(hosts[w.host].view.region for w in usable)
    targets: list[HostRecord] = []
    for _ in range(plan.create):
        decision = choose_host(
            views,
            used,
            spread_request(request, views, used, per_region, rt.settings.memory_overcommit)
            if spec.placement.spread == "Regions"
            else request,
            scorer=rt.scorer,
            memory_overcommit=rt.settings.memory_overcommit,
        )
        if isinstance(decision, Unschedulable):
            if not targets:
                return _blocker(decision.message)
            break
        host_name = decision.host
        targets.append(hosts[host_name])
        per_region[hosts[host_name].view.region] += 1
        prior = used.get(host_name, Allocation())
        used[host_name] = Allocation(
            prior.sandboxes + 1,
            prior.memory_bytes + request.memory_bytes,
            prior.cpus + request.cpus,
        )
    # In the background, so the pipeline stays full: the next round starts as soon as one
    # creation ends, not when the slowest of a batch does.
    for host in targets:
        name = f"pool-{state.uid[:8]}-{secrets.token_hex(4)}"
        state.creating += 1
        state.inflight[name] = (host.name, request.memory_bytes, request.cpus)
        task = asyncio.create_task(_create_one(rt, state, spec, current_hash, host, name))
        state.tasks.add(task)
        task.add_done_callback(functools.partial(_created, state, name))
    return None


def _created(state: PoolState, name: str, task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error(
            "pool %s/%s: making %s failed: %r", state.namespace, state.name, name, task.exception()
        )
    state.tasks.discard(task)
    state.inflight.pop(name, None)
    state.creating -= 1
    state.wake.set()


def spread_request(
    request: Request,
    hosts: Iterable[HostView],
    used: Mapping[str, Allocation],
    per_region: Mapping[str | None, int],
    memory_overcommit: float,
) -> Request:
    """`request` narrowed to the region with the fewest warm containers among the regions
    where some host fits (ties by name). Pure. Hosts without a region form one region."""
    fits = {
        h.region
        for h in hosts
        if reject_reason(h, used.get(h.name, Allocation()), request, memory_overcommit) is None
    }
    named = sorted(r for r in fits if r is not None)
    if len(named) < 2 or None in fits:
        return request  # nothing to spread over, or hosts no region narrowing can select
    region = min(named, key=lambda r: (per_region.get(r, 0), r))
    return replace(request, regions=frozenset([region]))


async def remove_pool(
    rt: Runtime, state: PoolState, hosts: Mapping[str, HostRecord], claimed: Callable[[str], bool]
) -> None:
    """Destroy a deleted pool's unclaimed warm containers on every host that answers."""
    if state.tasks:  # creations in flight finish first, so the listing below has them all
        await asyncio.wait(set(state.tasks), timeout=rt.settings.agent_timeout_seconds)
    await refresh(rt, state, hosts, claimed)
    for warm in list(state.warm.values()):
        if claimed(warm.name) or warm.host not in hosts:
            continue
        try:
            agent = await rt.agents.client(hosts[warm.host])
            await agent.delete(warm.name)
        except (AgentError, CredentialsMissing) as exc:
            log.warning(
                "pool %s/%s: cannot remove %s: %s", state.namespace, state.name, warm.name, exc
            )
    state.warm.clear()


def _blocker(message: str) -> str:
    if "without template" in message:
        return f"{Reason.TEMPLATE_MISSING}: {message}"
    if "out of memory" in message or "maxSandboxes" in message or "fewer than" in message:
        return f"{Reason.NO_CAPACITY}: {message}"
    return f"{Reason.NO_HOST}: {message}"

"""What a SandboxPool should do, and what its status is: pure functions.

A fill round plans with `plan_pool` (create what is missing, bounded; remove what is out of
date or surplus), places the new warm containers with `choose_targets` (spread over regions),
and the pool's fill loop waits for claims to pause (`refill_hold`) and writes status counts no
more often than it must (`status_write_due`). A pool with spec.autoscaling is sized by
`autoscaled_replicas` from its recent claims.
"""

from __future__ import annotations

import collections
import hashlib
import json
import math
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from .conditions import READY, Reason, condition, set_condition
from .inventory import PoolState, Warm
from .labels import POOL_UID
from .models import bytes_of
from .pool_models import PoolAutoscaling, SandboxPoolSpec
from .scheduling import (
    CAPACITY,
    Allocation,
    Cause,
    HostView,
    Request,
    Scorer,
    Unschedulable,
    assumed_disk,
    choose_host,
    reject_reason,
)

__all__ = [
    "Blocker",
    "Demand",
    "PoolPlan",
    "autoscaled_replicas",
    "blocker_of",
    "choose_targets",
    "demand_of",
    "plan_pool",
    "pool_hash",
    "pool_request",
    "pool_status",
    "refill_hold",
    "spread_request",
    "status_write_due",
]


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
    """Create what is missing (bounded), delete the surplus and what is out of date.

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


@dataclass(frozen=True)
class Blocker:
    """Why a pool cannot fill: the Ready condition's reason and its message."""

    reason: Reason
    message: str


def blocker_of(unschedulable: Unschedulable) -> Blocker:
    """No host fits a new warm container: which reason says why."""
    if Cause.NO_TEMPLATE in unschedulable.causes:
        reason = Reason.TEMPLATE_MISSING
    elif unschedulable.causes & CAPACITY:
        reason = Reason.NO_CAPACITY
    else:
        reason = Reason.NO_HOST
    return Blocker(reason, f"{reason}: {unschedulable.message}")


def pool_status(
    current: Mapping[str, Any],
    state: PoolState,
    spec: SandboxPoolSpec,
    generation: int,
    blocker: Blocker | None,
    ready_hosts: Container[str],
    at: str,
) -> dict[str, Any]:
    """The pool's status. Warm containers on hosts that are not Ready do not count."""
    current_hash = pool_hash(spec)
    ready = sum(
        1
        for w in state.warm.values()
        if w.ready
        and w.spec_hash == current_hash
        and w.template == spec.template
        and w.host in ready_hosts
    )
    if ready >= spec.replicas:
        cond = condition(READY, True, Reason.FILLED, f"{ready} warm containers ready", generation)
    elif blocker is not None:
        cond = condition(READY, False, blocker.reason, blocker.message, generation)
    else:
        message = f"{ready} of {spec.replicas} ready"
        cond = condition(READY, False, Reason.FILLING, message, generation)
    return {
        "replicas": len(state.warm) + len(state.inflight),  # made, or being made
        "readyReplicas": ready,
        "selector": f"{POOL_UID}={state.uid}",
        "observedGeneration": generation,
        "conditions": set_condition(current.get("conditions") or [], cond, at),
    }


def status_write_due(
    current: Mapping[str, Any], changes: Mapping[str, Any], since_last: float, interval: float
) -> bool:
    """Whether the status changes go out now. Counts that grow are written at most every
    `interval` (they change with every refill); the Ready condition, the generation and a
    drop in readyReplicas (a claim took a warm container) at once: the status never tells of
    more ready warm containers than the agents hold."""
    if not changes:
        return False
    urgent = bool(changes.keys() - {"replicas", "readyReplicas"}) or int(
        changes.get("readyReplicas", current.get("readyReplicas") or 0)
    ) < int(current.get("readyReplicas") or 0)
    return urgent or since_last >= interval


def refill_hold(
    now: float, last_take: float, delay: float, ready: int, replicas: int, floor: float
) -> float:
    """How long the refill waits for claims to pause, in seconds.

    Claims come first: a container start costs the CPU of several claims on a small host.
    But a pool whose ready containers fell below `floor` of its replicas refills at once.
    """
    if ready < floor * replicas:
        return 0.0
    return max(0.0, last_take + delay - now)


def pool_request(spec: SandboxPoolSpec) -> Request:
    """What one warm container of the pool needs."""
    return Request(
        template=spec.template,
        cpus=spec.resources.cpus,
        memory_bytes=bytes_of(spec.resources.memory),
        disk_bytes=None if spec.resources.disk is None else bytes_of(spec.resources.disk),
        regions=frozenset(spec.placement.regions or ()),
        host_selector=spec.placement.host_selector or {},
    )


def spread_request(
    request: Request,
    hosts: Iterable[HostView],
    used: Mapping[str, Allocation],
    per_region: Mapping[str | None, int],
    memory_overcommit: float,
) -> Request:
    """`request` narrowed to the region with the fewest warm containers among the regions
    where some host fits (ties by name). Hosts without a region form one region."""
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


@dataclass(frozen=True)
class Fleet:
    """The hosts a pool fills onto, and what each holds already."""

    hosts: Mapping[str, HostView]
    used: Mapping[str, Allocation]
    scorer: Scorer
    memory_overcommit: float


def choose_targets(
    spec: SandboxPoolSpec, usable: Iterable[Warm], count: int, fleet: Fleet
) -> list[str] | Blocker:
    """Hosts for `count` new warm containers (fewer when the hosts fill up, a Blocker when
    not even one fits), each counted on its host before the next is chosen."""
    request = pool_request(spec)
    used = dict(fleet.used)
    views = list(fleet.hosts.values())
    per_region = collections.Counter(fleet.hosts[w.host].region for w in usable)
    targets: list[str] = []
    for _ in range(count):
        if spec.placement.spread == "Regions":
            asked = spread_request(request, views, used, per_region, fleet.memory_overcommit)
        else:
            asked = request
        decision = choose_host(
            views, used, asked, scorer=fleet.scorer, memory_overcommit=fleet.memory_overcommit
        )
        if isinstance(decision, Unschedulable):
            if not targets:
                return blocker_of(decision)
            break
        targets.append(decision.host)
        per_region[fleet.hosts[decision.host].region] += 1
        used[decision.host] = used.get(decision.host, Allocation()) + Allocation.of(
            request.memory_bytes, request.cpus, assumed_disk(request)
        )
    return targets


@dataclass(frozen=True)
class Demand:
    """A pool's recent claims, as its fill loop saw them."""

    claims: int  # claims (taken or missed) within the autoscaling window
    misses: int  # Sandboxes that found no warm container, not yet answered
    idle_seconds: float  # since the last claim (or since the loop started)


def autoscaled_replicas(current: int, auto: PoolAutoscaling, demand: Demand, room: int) -> int:
    """The replicas an autoscaled pool should have.

    Ahead of demand: what `leadSeconds` of claims at the window's rate take, at least
    minReplicas. A miss grows the pool at once, by the misses, beyond that. Shrinking waits
    until no claim came for `scaleDownAfterSeconds`. Growth stops at `room` (the warm
    containers the hosts can hold, these included) and everything at maxReplicas.
    """
    rate = demand.claims / auto.window_seconds
    want = max(auto.min_replicas, math.ceil(rate * auto.lead_seconds - 1e-9))
    if demand.misses:
        want = max(want, current + demand.misses)
    if want < current and demand.idle_seconds < auto.scale_down_after_seconds:
        want = current
    if want > current:
        want = max(current, min(want, room))
    return max(min(want, auto.max_replicas), min(auto.min_replicas, auto.max_replicas))


def demand_of(
    claim_times: Iterable[float], misses: int, last_claim: float, now: float, window: float
) -> Demand:
    """The Demand at monotonic `now` from the claim times kept."""
    recent = sum(1 for t in claim_times if now - t <= window)
    return Demand(recent, misses, max(0.0, now - last_claim))

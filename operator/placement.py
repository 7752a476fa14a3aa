"""Where a Sandbox goes: a warm container of its pool, or a host for a new one.

`place` is the whole decision and touches no API: it ranks the hosts with the scheduler over
the cluster's view (hosts, and what each holds: sandboxes seen and assumed, warm containers),
takes a warm container of the pool when one is ready (a synchronous take: no other claim in
this process can take the same container), and returns the `Assignment` to record, or why no
host fits. Recording it before the agent hears of it is the reconciler's part.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from .conditions import READY, SCHEDULED, Reason, condition, set_condition
from .containers import container_name
from .geo import GeoPoint, Locator, Unlocated
from .index import ClusterIndex
from .inventory import Inventories, PoolState, Warm
from .models import SandboxSpec, bytes_of
from .records import HostRecord, PoolInfo
from .scheduling import (
    Allocation,
    Decision,
    Request,
    Scorer,
    Tally,
    Unschedulable,
    assumed_disk,
    choose_host,
    explain,
    rank_hosts,
)

__all__ = [
    "ADOPT_IF_MATCH",
    "Assignment",
    "PlacementPolicy",
    "allocations",
    "place",
    "request_for",
    "take_warm",
]

# In the assignment annotation of a claim (never in status): the ETag the warm container had
# when it was taken. The first PUT adopts it only while it still has that (If-Match).
ADOPT_IF_MATCH = "adoptIfMatch"


@dataclass(frozen=True)
class PlacementPolicy:
    """How hosts are ranked: the scorer, the memory overcommit, the visitors' locator."""

    scorer: Scorer
    memory_overcommit: float
    locator: Locator


def allocations(index: ClusterIndex, inventories: Inventories) -> dict[str, Allocation]:
    """What is on each host: sandboxes (seen and assumed) and warm containers."""
    tally = Tally(index.sandbox_allocations())
    inventories.count_into(tally)
    return tally.totals()


def request_for(spec: SandboxSpec, template: str, locator: Locator) -> tuple[Request, str]:
    """What a placement asks for, and why it cannot use the client's location (if so)."""
    located = locator.locate(spec.placement.client_ip) if spec.placement.client_ip else None
    request = Request(
        template=template,
        cpus=spec.resources.cpus,
        memory_bytes=bytes_of(spec.resources.memory),
        disk_bytes=None if spec.resources.disk is None else bytes_of(spec.resources.disk),
        regions=frozenset([spec.placement.region]) if spec.placement.region else frozenset(),
        host_selector=spec.placement.host_selector or {},
        client=located if isinstance(located, GeoPoint) else None,
    )
    # An address GeoIP cannot place is no error: the decision falls back, and says why.
    return request, (f"; {located.reason}" if isinstance(located, Unlocated) else "")


@dataclass(frozen=True)
class Assignment:
    """A placement decision: the container, its host, and how it was chosen."""

    host: str
    container: str
    template: str
    scheduled: dict[str, Any]  # the Scheduled condition
    placement: dict[str, Any]  # status.placement
    from_pool: str | None = None
    adopt_if_match: str | None = None  # a claimed warm container's ETag
    assumed: Allocation | None = None  # a new container's room on its host, until seen
    taken: Warm | None = None  # the warm container claimed, given back if never stored

    def record(
        self, conditions: list[dict[str, Any]], generation: int, expires: str | None, at: str
    ) -> dict[str, Any]:
        """The fields recorded with the decision (the assignment annotation; status takes
        them with its next write), with the ETag of an adoption."""
        recorded: dict[str, Any] = {
            "phase": "Scheduled",
            "host": self.host,
            "containerName": self.container,
            "template": self.template,
            "fromPool": self.from_pool,
            "placement": self.placement,
            "expiresAt": expires,
            "observedGeneration": generation,
            "conditions": set_condition(
                set_condition(conditions, {**self.scheduled, "observedGeneration": generation}, at),
                condition(
                    READY,
                    False,
                    Reason.CREATING,
                    f"preparing the container on {self.host}",
                    generation,
                ),
                at,
            ),
        }
        if self.adopt_if_match is not None:
            recorded[ADOPT_IF_MATCH] = self.adopt_if_match
        return recorded


def take_warm(
    state: PoolState | None,
    template: str,
    hosts: Mapping[str, HostRecord],
    used: Mapping[str, Allocation],
    request: Request,
    policy: PlacementPolicy,
    at: float,
) -> Warm | None:
    """Take a ready warm container of `template` on the best-ranked host that has one;
    None when the inventory is not read yet or holds none."""
    if state is None or not state.loaded.is_set():
        return None
    # The warm container already holds its room on its host: rank without adding it again.
    ranked = rank_hosts(
        (h.view for h in hosts.values()),
        used,
        replace(request, memory_bytes=0),
        scorer=policy.scorer,
        memory_overcommit=policy.memory_overcommit,
    )
    return state.take(template, ranked, at)


def claimed(
    pool: PoolInfo, warm: Warm, host: HostRecord, request: Request, fallback: str
) -> Assignment:
    """The assignment of a warm container taken for a claim."""
    kind, km, why = explain(host.view, request)
    placement = {"reason": kind, "distanceKm": km, "message": why + fallback}
    if request.client is not None:
        placement["clientLocation"] = request.client.label
    message = f"adopted warm container {warm.name} of pool {pool.name} ({why}{fallback})"
    return Assignment(
        host=warm.host,
        container=warm.name,
        template=warm.template,
        scheduled=condition(SCHEDULED, True, Reason.CLAIMED, message),
        placement=placement,
        from_pool=pool.name,
        adopt_if_match=warm.etag,
        taken=warm,
    )


def cold(
    decision: Decision,
    uid: str,
    template: str,
    pool: PoolInfo | None,
    request: Request,
    fallback: str,
) -> Assignment:
    """The assignment of a new container on the chosen host (a pool's fallback included)."""
    why = decision.reason + fallback
    placement: dict[str, Any] = {
        "reason": decision.kind,
        "distanceKm": decision.distance_km,
        "message": why,
    }
    if request.client is not None:
        placement["clientLocation"] = request.client.label
    if pool is not None:
        why = f"pool {pool.name} had no warm container: created cold; {why}"
    reason = Reason.POOL_EMPTY if pool is not None else Reason.HOST_CHOSEN
    return Assignment(
        host=decision.host,
        container=container_name(uid),
        template=template,
        scheduled=condition(SCHEDULED, True, reason, why),
        placement=placement,
        assumed=Allocation.of(request.memory_bytes, request.cpus, assumed_disk(request)),
    )


@dataclass(frozen=True)
class Want:
    """What is to be placed: a Sandbox's UID and spec, its template, and its pool if any."""

    uid: str
    spec: SandboxSpec
    template: str
    pool: PoolInfo | None = None


def place(
    want: Want,
    index: ClusterIndex,
    inventories: Inventories,
    policy: PlacementPolicy,
    at: float,
) -> Assignment | Unschedulable:
    """The decision for `want`: a warm container of its pool if one is ready, else the best
    host for a new container (`at`: the monotonic time, for the pool's last claim)."""
    request, fallback = request_for(want.spec, want.template, policy.locator)
    used = allocations(index, inventories)
    if want.pool is not None:
        state = inventories.get(want.pool.uid)
        warm = take_warm(state, want.template, index.hosts, used, request, policy, at)
        if warm is not None:
            return claimed(want.pool, warm, index.hosts[warm.host], request, fallback)
        if state is not None and state.loaded.is_set():
            state.note_miss(want.uid, at)
    decision = choose_host(
        (h.view for h in index.hosts.values()),
        used,
        request,
        scorer=policy.scorer,
        memory_overcommit=policy.memory_overcommit,
    )
    if isinstance(decision, Unschedulable):
        return decision
    return cold(decision, want.uid, want.template, want.pool, request, fallback)

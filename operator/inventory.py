"""The warm containers of each pool, as the operator knows them: the agents are the truth,
this is what they last said plus what the operator made or took since.

Shared by a pool's fill loop (which refreshes and refills it) and the claims (which take from
it). Pure data: no I/O.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field

from tuxio.nodeagent.models import ContainerStatus

from .labels import POOL_SPEC
from .scheduling import Allocation, Tally

__all__ = ["Inventories", "PoolState", "Warm", "warm_of"]


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
    created: str = ""
    # Its disk limit (the host's default when its spec names none, as the agent reports it).
    disk_bytes: int = 0  # ISO 8601 from the agent: claims take the longest waiting first
    # The agent's ETag of the container as a warm one: a claim adopts it only while it still
    # has that (If-Match), so two claimants can never both get it.
    etag: str = ""


def warm_of(container: ContainerStatus, host: str) -> Warm:
    """A warm container as its agent listed it."""
    limits = container.spec.limits
    return Warm(
        name=container.name,
        host=host,
        template=container.template,
        spec_hash=container.labels.get(POOL_SPEC, ""),
        ready=container.state == "running",
        memory_bytes=limits.memory,
        cpus=limits.cpus,
        disk_bytes=limits.disk
        if limits.disk is not None
        else (container.disk.limit_bytes or 0)
        if container.disk is not None
        else 0,
        created=container.created_at.isoformat() if container.created_at else "",
        etag=container.spec_hash,
    )


@dataclass
class PoolState:
    """The inventory of one pool, shared by its fill loop and the claims."""

    uid: str
    namespace: str
    name: str
    warm: dict[str, Warm] = field(default_factory=dict)
    loaded: asyncio.Event = field(default_factory=asyncio.Event)
    # Hosts whose containers of this pool this process has listed: only there may it make
    # more (elsewhere it cannot tell how many it has, and a restart would make them twice).
    listed: set[str] = field(default_factory=set)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    # Warm containers being made: name -> (host, what it holds there), counted on its host.
    inflight: dict[str, tuple[str, Allocation]] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    # The replicas the fill loop read last (None: not read yet): a creation whose answer was
    # lost is asked for again only while the pool still wants it.
    wanted: int | None = None
    last_take: float = 0.0  # monotonic time of the last claim
    # Demand, for autoscaling: monotonic times of recent claims (taken or missed), and the
    # Sandboxes that found no warm container, by UID (each counted once), not yet answered.
    claim_times: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=100_000)
    )
    missed: dict[str, float] = field(default_factory=dict)
    autoscaled: int | None = None  # the replicas the autoscaler last chose
    # Taken at admission for a Sandbox not stored yet: container -> (the Warm, "ns/name" of
    # that Sandbox). Given back (tuxio.operator.claims) once that Sandbox turns out stored
    # without it (the API server dropped the webhook's answer, e.g. past its timeout) or
    # once the hold ends unused; forgotten once a stored Sandbox names it.
    admitted: dict[str, tuple[Warm, str]] = field(default_factory=dict)
    _seen_misses: collections.OrderedDict[str, None] = field(
        default_factory=collections.OrderedDict
    )

    def take(self, template: str, hosts_in_order: list[str], at: float) -> Warm | None:
        """Remove and return a ready warm container of `template`, on the first host possible
        (there, the one that has waited longest); `at` is the monotonic time of the claim.

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
        self.last_take = at
        self.claim_times.append(at)
        self.wake.set()  # replenish
        return chosen

    def note_miss(self, sandbox_uid: str, at: float) -> None:
        """A Sandbox of this pool found no warm container (once per Sandbox, however often
        it is placed): the autoscaler grows the pool at once."""
        if sandbox_uid in self._seen_misses:
            return
        self._seen_misses[sandbox_uid] = None
        while len(self._seen_misses) > 100_000:
            self._seen_misses.popitem(last=False)
        self.missed[sandbox_uid] = at
        self.last_take = max(self.last_take, at)
        self.claim_times.append(at)
        self.wake.set()

    def give_back(self, name: str) -> bool:
        """An admission's take that no Sandbox got: ready for the next claim again."""
        held = self.admitted.pop(name, None)
        if held is None:
            return False
        self.warm[name] = held[0]
        self.wake.set()  # the fill loop counts it again (and trims a surplus)
        return True

    def ready_count(self) -> int:
        return sum(1 for w in self.warm.values() if w.ready)

    def count_into(self, tally: Tally) -> None:
        """Add what each warm container (made or being made) holds to its host's total."""
        for warm in self.warm.values():
            tally.add(warm.host, warm.memory_bytes, warm.cpus, disk_bytes=warm.disk_bytes)
        for host, allocation in self.inflight.values():
            tally.add(
                host,
                allocation.memory_bytes,
                allocation.cpus,
                allocation.sandboxes,
                allocation.disk_bytes,
            )


class Inventories:
    """The inventory of every pool that has a fill loop, by pool UID."""

    def __init__(self) -> None:
        self._states: dict[str, PoolState] = {}

    def get(self, uid: str) -> PoolState | None:
        return self._states.get(uid)

    def open(self, uid: str, namespace: str, name: str) -> PoolState:
        """The pool's inventory, made empty (not loaded) if it has none yet."""
        return self._states.setdefault(uid, PoolState(uid, namespace, name))

    def close(self, uid: str) -> PoolState | None:
        return self._states.pop(uid, None)

    def stored(self, container: str) -> None:
        """A stored Sandbox names `container`: no longer held as maybe never stored (in
        `admitted`), whatever the index shows yet."""
        for state in self._states.values():
            state.admitted.pop(container, None)

    def count_into(self, tally: Tally) -> None:
        """Add every pool's warm containers, made and being made, to their hosts' totals."""
        for state in self._states.values():
            state.count_into(tally)

"""What the operator keeps while it runs: settings, API and agent clients, small caches.

Nothing here is needed for correctness after a restart: the caches are rebuilt from the API
objects and the agents' answers.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tuxio.operator.agentclient import AgentClient

from .conditions import HOST_READY
from .geo import GeoPoint, Locator
from .kube import Kube
from .models import SandboxHostSpec, SandboxPoolSpec, SandboxSpec, bytes_of
from .scheduling import Allocation, HostView, Scorer, placement_scorer
from .settings import OperatorSettings
from .workqueue import WorkQueue

__all__ = [
    "ASSIGNMENT",
    "FINALIZER",
    "AgentRegistry",
    "AssumeCache",
    "CredentialsMissing",
    "EventBudget",
    "HostRecord",
    "KeyedLocks",
    "Ledger",
    "Placed",
    "PoolInfo",
    "Runtime",
    "SandboxBook",
    "assignment_of",
    "host_record",
    "placed_of",
]


class CredentialsMissing(LookupError):
    """The Secret with a host's token cannot be read or lacks the key."""


@dataclass(frozen=True)
class HostRecord:
    """A SandboxHost as the indexes keep it."""

    name: str
    spec: SandboxHostSpec
    view: HostView
    heartbeat: str | None
    not_ready_since: str | None


def host_record(name: str, body: Mapping[str, Any]) -> HostRecord:
    spec = SandboxHostSpec.model_validate(body.get("spec") or {})
    status = body.get("status") or {}
    ready = next((c for c in status.get("conditions", []) if c.get("type") == HOST_READY), None)
    capacity = status.get("capacity") or {}
    view = HostView(
        name=name,
        ready=bool(ready and ready.get("status") == "True"),
        unschedulable=spec.unschedulable,
        templates=frozenset(status.get("templates") or []),
        shared_cpus=int(capacity.get("sharedCpus", 0)),
        memory_bytes=int(capacity.get("memoryBytes", 0)),
        labels=dict((body.get("metadata") or {}).get("labels") or {}),
        region=spec.location.region,
        max_sandboxes=spec.max_sandboxes,
        load=float(status.get("load") or 0.0),
        location=None
        if spec.location.latitude is None or spec.location.longitude is None
        else GeoPoint(spec.location.latitude, spec.location.longitude, name),
    )
    not_ready_since = None
    if ready and ready.get("status") != "True":
        not_ready_since = ready.get("lastTransitionTime")
    return HostRecord(name, spec, view, status.get("heartbeat"), not_ready_since)


@dataclass(frozen=True)
class Placed:
    """A sandbox that has a host, as the indexes keep it."""

    uid: str
    namespace: str
    name: str
    host: str
    container: str
    phase: str | None
    state: str
    restart_policy: str
    memory_bytes: int
    cpus: int
    usage_observed_at: str | None
    deleting: bool


# The placement decision, written to the Sandbox's metadata (with its finalizer, in one write)
# before the agent is told; copied into status with the first status write after that.
ASSIGNMENT = "tux.io/assignment"
# Held by every Sandbox that may have a container, until the container is destroyed. Ours, not
# kopf's: kopf adds its finalizer in an event cycle of its own, before any handler runs, which
# costs every new Sandbox a serial write and a watch round trip. This one is written with the
# placement decision (or stored with the Sandbox by the claim webhook) instead, and is in place
# before the agent is asked for anything; it is released by sandboxes.finalize_and_release
# (kopf calls deletion handlers only under its own).
FINALIZER = "tux.io/container"


def assignment_of(body: Mapping[str, Any]) -> dict[str, Any]:
    """The Sandbox's placement as recorded: status once written, else the annotation."""
    status = body.get("status") or {}
    if status.get("host") and status.get("containerName"):
        return dict(status)
    raw = ((body.get("metadata") or {}).get("annotations") or {}).get(ASSIGNMENT)
    if not raw:
        return {}
    try:
        recorded = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(recorded, dict) or not recorded.get("host"):
        return {}
    return recorded


def placed_of(uid: str, namespace: str, name: str, body: Mapping[str, Any]) -> Placed | None:
    status = {**assignment_of(body), **{k: v for k, v in (body.get("status") or {}).items() if v}}
    if not status.get("host") or not status.get("containerName"):
        return None
    spec = SandboxSpec.model_validate(body.get("spec") or {})
    return Placed(
        uid=uid,
        namespace=namespace,
        name=name,
        host=status["host"],
        container=status["containerName"],
        phase=status.get("phase"),
        state=spec.state,
        restart_policy=spec.restart_policy,
        memory_bytes=bytes_of(spec.resources.memory),
        cpus=spec.resources.cpus,
        usage_observed_at=(status.get("usage") or {}).get("observedAt"),
        deleting=bool((body.get("metadata") or {}).get("deletionTimestamp")),
    )


@dataclass(frozen=True)
class PoolInfo:
    """A SandboxPool as the indexes keep it."""

    uid: str
    namespace: str
    name: str
    spec: SandboxPoolSpec


class Ledger:
    """What each host holds in sandboxes, kept up to date as the Sandbox index changes.

    The totals per host are adjusted entry by entry, so a scheduling decision reads them in
    O(hosts) instead of adding up every sandbox (10 000 of them cost 2 ms a decision).
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[str, int, int]] = {}
        self._totals: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0, 0])

    def set(self, uid: str, placed: Placed | None) -> None:
        """Record the sandbox as it is now (None or Failed: it holds nothing)."""
        self.discard(uid)
        if placed is None or placed.phase == "Failed":
            return
        entry = (placed.host, placed.memory_bytes, placed.cpus)
        self._entries[uid] = entry
        total = self._totals[entry[0]]
        total[0] += 1
        total[1] += entry[1]
        total[2] += entry[2]

    def discard(self, uid: str) -> None:
        entry = self._entries.pop(uid, None)
        if entry is None:
            return
        total = self._totals[entry[0]]
        total[0] -= 1
        total[1] -= entry[1]
        total[2] -= entry[2]
        if not total[0]:
            del self._totals[entry[0]]

    def __contains__(self, uid: object) -> bool:
        return uid in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def totals(self) -> dict[str, list[int]]:
        """Per host: [sandboxes, memory bytes, cpus] (a copy)."""
        return {host: list(total) for host, total in self._totals.items()}


class SandboxBook:
    """Every placed Sandbox the operator knows, by host and by the container it names: kept
    with the one Sandbox index kopf fills before any handler runs (so after a restart it is
    whole before use), entry by entry, instead of one kopf index per lookup (each costs a
    call per event)."""

    def __init__(self) -> None:
        self._entries: dict[str, Placed] = {}
        self._by_host: dict[str, dict[str, Placed]] = collections.defaultdict(dict)
        self._containers: dict[str, str] = {}

    def set(self, uid: str, placed: Placed | None) -> None:
        """Record the Sandbox as it is now (None: not placed)."""
        self.discard(uid)
        if placed is None:
            return
        self._entries[uid] = placed
        self._by_host[placed.host][uid] = placed
        self._containers[placed.container] = uid

    def discard(self, uid: str) -> None:
        placed = self._entries.pop(uid, None)
        if placed is None:
            return
        on_host = self._by_host[placed.host]
        on_host.pop(uid, None)
        if not on_host:
            del self._by_host[placed.host]
        if self._containers.get(placed.container) == uid:
            del self._containers[placed.container]

    def on_host(self, host: str) -> list[Placed]:
        return list(self._by_host.get(host, {}).values())

    def names_container(self, container: str) -> bool:
        """Whether some Sandbox's status or assignment names this container."""
        return container in self._containers


class AssumeCache:
    """Decisions recorded but not yet back through the watch.

    Between writing status.host and seeing that write in the index, a burst of creations would
    all see the host as empty; the scheduler counts these assumed placements too.
    """

    def __init__(self, ttl: float = 60.0) -> None:
        self.ttl = ttl
        self._assumed: dict[str, tuple[str, int, int, float]] = {}

    def assume(self, uid: str, host: str, memory_bytes: int, cpus: int) -> None:
        self._assumed[uid] = (host, memory_bytes, cpus, time.monotonic())

    def forget(self, uid: str) -> None:
        self._assumed.pop(uid, None)

    def allocations(self, ledger: Ledger) -> dict[str, list[int]]:
        """Per host [sandboxes, memory bytes, cpus]: the ledger's plus the assumed ones."""
        totals = collections.defaultdict(lambda: [0, 0, 0], ledger.totals())
        if not self._assumed:
            return totals
        cutoff = time.monotonic() - self.ttl
        for uid, (host, memory, cpus, when) in list(self._assumed.items()):
            if uid in ledger or when < cutoff:
                del self._assumed[uid]
                continue
            total = totals[host]
            total[0] += 1
            total[1] += memory
            total[2] += cpus
        return totals


class EventBudget:
    """A token bucket for routine (Normal) Events, as the kubelet limits its own (qps and
    burst): each Event is an API write, and a frontend making a Sandbox per visitor would
    otherwise double the writes of every claim. Warnings are never limited."""

    def __init__(self, per_second: float, burst: int) -> None:
        self.per_second = per_second
        self.burst = burst
        self._tokens = float(burst)
        self._at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.per_second)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


class KeyedLocks:
    """An asyncio lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: collections.Counter[str] = collections.Counter()

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] += 1
        try:
            async with lock:
                yield
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key]
                del self._locks[key]


class AgentRegistry:
    """One AgentClient per host, rebuilt when the host's endpoint or credentials change."""

    def __init__(self, kube: Kube, timeout: float) -> None:
        self.kube = kube
        self.timeout = timeout
        self._clients: dict[str, tuple[tuple[Any, ...], AgentClient]] = {}

    async def client(self, host: HostRecord) -> AgentClient:
        ref = host.spec.credentials_secret_ref
        key = (host.spec.endpoint, ref.name, ref.namespace, ref.token_key, ref.ca_key)
        cached = self._clients.get(host.name)
        if cached and cached[0] == key:
            return cached[1]
        try:
            data = await self.kube.read_secret(ref.namespace, ref.name)
        except Exception as exc:
            raise CredentialsMissing(
                f"cannot read Secret {ref.namespace}/{ref.name}: {exc}"
            ) from exc
        if ref.token_key not in data:
            raise CredentialsMissing(
                f"Secret {ref.namespace}/{ref.name} has no key {ref.token_key}"
            )
        client = AgentClient(
            host.spec.endpoint.rstrip("/"),
            data[ref.token_key].strip(),
            ca_pem=data.get(ref.ca_key) if ref.ca_key else None,
            timeout=self.timeout,
        )
        if cached:
            await cached[1].aclose()
        self._clients[host.name] = (key, client)
        return client

    async def forget(self, host_name: str) -> None:
        """Drop a host's client (it answered 401: its credentials changed)."""
        cached = self._clients.pop(host_name, None)
        if cached:
            await cached[1].aclose()

    async def close(self) -> None:
        for _, client in self._clients.values():
            await client.aclose()
        self._clients.clear()


class Claims:
    """Warm containers claimed by this process, until the Sandbox index shows the claim.

    A claim made at admission may never be stored (a later admission step or the storage
    refuses the Sandbox): it is held for `ttl` seconds, longer than the API server takes to
    answer a request, then the container is free again. Were it still stored after that, the
    agent's compare-and-set would give the container to one claimant only.
    """

    def __init__(self, ttl: float = 600.0) -> None:
        self.ttl = ttl
        self._until: dict[str, float] = {}

    def add(self, name: str, ttl: float | None = None) -> None:
        self._until[name] = time.monotonic() + (self.ttl if ttl is None else ttl)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str) or name not in self._until:
            return False
        if self._until[name] < time.monotonic():
            del self._until[name]
            return False
        return True


@dataclass
class Runtime:
    """Everything handlers share, kept in kopf's memo."""

    settings: OperatorSettings
    kube: Kube
    agents: AgentRegistry
    locator: Locator = field(default_factory=lambda: Locator(None))
    ledger: Ledger = field(default_factory=Ledger)
    book: SandboxBook = field(default_factory=SandboxBook)
    assumed: AssumeCache = field(default_factory=AssumeCache)
    locks: KeyedLocks = field(default_factory=KeyedLocks)
    # Pool inventories by pool UID (tuxio.operator.pools.PoolState), and claims in flight.
    pools: dict[str, Any] = field(default_factory=dict)
    claims: Claims = field(default_factory=Claims)
    events: EventBudget = field(default_factory=lambda: EventBudget(10.0, 100))
    # Sandboxes to reconcile: the newest body of each, one reconciliation at a time.
    queue: WorkQueue = field(default_factory=WorkQueue)
    # The generation of each Sandbox whose reconciliation last ended writing its status, so
    # that work queued with an older body of it is skipped (in memory only: a restarted
    # operator reconciles everything once, which is idempotent).
    settled: dict[str, int] = field(default_factory=dict)
    # kopf's indexes as the handlers last saw them (live objects), for the claim webhook,
    # which is no kopf handler: set by the handlers that run first (handlers._Views).
    views: Callable[[], Any] | None = None
    # Deleted Sandboxes whose containers are being destroyed, by UID.
    finalizing: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    @property
    def scorer(self) -> Scorer:
        return placement_scorer(self.settings.distance_weight)

    def allocations(self) -> dict[str, Allocation]:
        """What is on each host: sandboxes (seen and assumed) and warm containers."""
        totals = self.assumed.allocations(self.ledger)
        for state in self.pools.values():
            for warm in state.warm.values():
                total = totals[warm.host]
                total[0] += 1
                total[1] += warm.memory_bytes
                total[2] += warm.cpus
            for host, memory, cpus in state.inflight.values():
                total = totals[host]
                total[0] += 1
                total[1] += memory
                total[2] += cpus
        return {host: Allocation(t[0], t[1], t[2]) for host, t in totals.items()}

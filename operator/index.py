"""The operator's view of the cluster: hosts, pools and Sandboxes, kept as the watch reports
them, and read by everything that decides.

kopf calls its index handlers for every watch event, the initial listing after a start
included, before any other handler runs; the handlers feed this index from there (and from
DELETED events, which kopf's indexes drop without a call). So after a restart the view is whole
before it is used, and anything may read it, the claim webhook included, without reaching into
kopf. Totals per host (sandboxes, memory, cores) are kept entry by entry, so a decision reads
them in O(hosts), not O(sandboxes).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping
from types import MappingProxyType

from .records import HostRecord, Placed, PoolInfo
from .scheduling import Allocation

__all__ = ["AssumeCache", "ClusterIndex", "Ledger", "SandboxBook"]


class Ledger:
    """What each host holds in sandboxes, kept up to date as Sandboxes change.

    The totals per host are adjusted entry by entry, so a scheduling decision reads them in
    O(hosts) instead of adding up every sandbox (10 000 of them cost 2 ms a decision).
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[str, Allocation]] = {}
        self._totals: dict[str, Allocation] = {}

    def set(self, uid: str, placed: Placed | None) -> None:
        """Record the sandbox as it is now (None or Failed: it holds nothing)."""
        self.discard(uid)
        if placed is None or placed.phase == "Failed":
            return
        entry = (placed.host, placed.allocation)
        self._entries[uid] = entry
        self._totals[entry[0]] = self._totals.get(entry[0], Allocation()) + entry[1]

    def discard(self, uid: str) -> None:
        entry = self._entries.pop(uid, None)
        if entry is None:
            return
        host, allocation = entry
        left = self._totals[host] - allocation
        if left.sandboxes:
            self._totals[host] = left
        else:
            del self._totals[host]

    def __contains__(self, uid: object) -> bool:
        return uid in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def totals(self) -> dict[str, Allocation]:
        """Per host, what its sandboxes hold (a copy)."""
        return dict(self._totals)


class SandboxBook:
    """Every Sandbox the operator knows, and the placed ones by host and by the container
    they name (the probe's and the pools' lookups)."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[str, str]] = {}
        self._entries: dict[str, Placed] = {}
        self._by_host: dict[str, dict[str, Placed]] = collections.defaultdict(dict)
        self._containers: dict[str, str] = {}

    def set(self, uid: str, namespace: str, name: str, placed: Placed | None) -> None:
        """Record the Sandbox as it is now (None: not placed)."""
        self.discard(uid)
        self._known[uid] = (namespace, name)
        if placed is None:
            return
        self._entries[uid] = placed
        self._by_host[placed.host][uid] = placed
        self._containers[placed.container] = uid

    def discard(self, uid: str) -> None:
        self._known.pop(uid, None)
        placed = self._entries.pop(uid, None)
        if placed is None:
            return
        on_host = self._by_host[placed.host]
        on_host.pop(uid, None)
        if not on_host:
            del self._by_host[placed.host]
        if self._containers.get(placed.container) == uid:
            del self._containers[placed.container]

    def knows(self, uid: str) -> bool:
        """Whether a Sandbox with this UID exists (placed or not)."""
        return uid in self._known

    def on_host(self, host: str) -> list[Placed]:
        return list(self._by_host.get(host, {}).values())

    def names_container(self, container: str) -> bool:
        """Whether some Sandbox's status or assignment names this container."""
        return container in self._containers


class AssumeCache:
    """Decisions recorded but not yet back through the watch.

    Between writing a decision and seeing that write in the index, a burst of creations would
    all see the host as empty; the scheduler counts these assumed placements too.
    """

    def __init__(self, monotonic: Callable[[], float], ttl: float = 60.0) -> None:
        self.ttl = ttl
        self._monotonic = monotonic
        self._assumed: dict[str, tuple[str, Allocation, float]] = {}

    def assume(self, uid: str, host: str, allocation: Allocation) -> None:
        self._assumed[uid] = (host, allocation, self._monotonic())

    def forget(self, uid: str) -> None:
        self._assumed.pop(uid, None)

    def allocations(self, ledger: Ledger) -> dict[str, Allocation]:
        """Per host: the ledger's totals plus the assumed placements it does not have yet."""
        totals = ledger.totals()
        if not self._assumed:
            return totals
        cutoff = self._monotonic() - self.ttl
        for uid, (host, allocation, when) in list(self._assumed.items()):
            if uid in ledger or when < cutoff:
                del self._assumed[uid]
                continue
            totals[host] = totals.get(host, Allocation()) + allocation
        return totals


class ClusterIndex:
    """Hosts by name, pools by namespace and name, Sandboxes by UID (see the module)."""

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self._hosts: dict[str, HostRecord] = {}
        self._pools: dict[tuple[str, str], PoolInfo] = {}
        self.sandboxes = SandboxBook()
        self.ledger = Ledger()
        self.assumed = AssumeCache(monotonic)
        # Read-only views, made once: the dicts behind them change in place.
        self.hosts: Mapping[str, HostRecord] = MappingProxyType(self._hosts)
        self.pools: Mapping[tuple[str, str], PoolInfo] = MappingProxyType(self._pools)

    # ----- fed by the handlers -----------------------------------------------------------

    def set_host(self, record: HostRecord) -> None:
        self._hosts[record.name] = record

    def discard_host(self, name: str) -> None:
        self._hosts.pop(name, None)

    def set_pool(self, pool: PoolInfo) -> None:
        self._pools[(pool.namespace, pool.name)] = pool

    def discard_pool(self, namespace: str, name: str) -> None:
        self._pools.pop((namespace, name), None)

    def set_sandbox(self, uid: str, namespace: str, name: str, placed: Placed | None) -> None:
        self.ledger.set(uid, placed)
        self.sandboxes.set(uid, namespace, name, placed)

    def discard_sandbox(self, uid: str) -> None:
        self.ledger.discard(uid)
        self.sandboxes.discard(uid)
        self.assumed.forget(uid)

    # ----- read by the reconcilers -------------------------------------------------------

    def pool(self, namespace: str, name: str) -> PoolInfo | None:
        return self._pools.get((namespace, name))

    def has_pool_uid(self, uid: str) -> bool:
        return any(p.uid == uid for p in self._pools.values())

    def sandbox_allocations(self) -> dict[str, Allocation]:
        """Per host: the sandboxes seen and assumed."""
        return self.assumed.allocations(self.ledger)

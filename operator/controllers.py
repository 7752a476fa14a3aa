"""The operator's parts, built once at start and handed to the handlers.

One reconciler per kind, each given only what it uses: the API client, the agents, the
cluster's view (the index), the pools' inventories, the clock and its own timings, all made
here from the settings. Nothing below the handlers sees this object.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from tuxio.common.timeutil import Clock, SystemClock

from .agents import AgentRegistry
from .backoff import Backoff
from .claims import ClaimAtAdmission, Claims
from .events import EventBudget, KopfEvents
from .geo import Locator
from .host_prober import HostProber, ProbeTimings
from .host_status import Grace
from .index import ClusterIndex
from .inventory import Inventories
from .kube import Kube, NotFound
from .nodes import NodeAgents, NodeHosts
from .placement import PlacementPolicy
from .pool_filler import PoolFiller, PoolTimings
from .sandbox_reconciler import SandboxReconciler, SandboxTimings
from .scheduling import placement_scorer
from .settings import OperatorSettings
from .workqueue import WorkQueue

__all__ = ["Controllers"]


@dataclass
class Controllers:
    """Every reconciler, and what they share."""

    settings: OperatorSettings
    kube: Kube
    agents: AgentRegistry
    index: ClusterIndex
    inventories: Inventories
    claims: Claims
    sandboxes: SandboxReconciler
    hosts: HostProber
    pools: PoolFiller
    nodes: NodeHosts
    claim_at_admission: ClaimAtAdmission
    # Sandboxes to reconcile: the newest body of each, one reconciliation at a time.
    queue: WorkQueue
    clock: Clock = field(default_factory=SystemClock)
    # Deleted Sandboxes whose containers are being destroyed, by UID.
    finalizing: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    @classmethod
    def build(
        cls, settings: OperatorSettings, kube: Kube, clock: Clock | None = None
    ) -> Controllers:
        clock = clock or SystemClock()
        backoff = Backoff(settings.retry_delay_seconds, 30.0)
        grace = Grace(settings.not_ready_after_seconds, settings.lost_after_seconds)
        agents = AgentRegistry(kube.read_secret, settings.agent_timeout_seconds)
        index = ClusterIndex(clock.monotonic)
        inventories = Inventories()
        claims = Claims(index.sandboxes, clock.monotonic)
        events = KopfEvents(
            EventBudget(settings.event_rate_per_second, settings.event_burst, clock.monotonic)
        )
        policy = PlacementPolicy(
            placement_scorer(settings.distance_weight),
            settings.memory_overcommit,
            Locator(settings.geoip_database),
        )
        sandboxes = SandboxReconciler(
            api=kube,
            agents=agents,
            index=index,
            inventories=inventories,
            claims=claims,
            policy=policy,
            events=events,
            clock=clock,
            timings=SandboxTimings(
                backoff=backoff,
                unschedulable_retry=settings.unschedulable_retry_seconds,
                usage_every=settings.usage_write_seconds,
                grace=grace,
            ),
        )

        async def reconcile_again(namespace: str, name: str) -> None:
            """A Sandbox the probe found drifted or back: read afresh, reconciled."""
            try:
                fresh = await kube.get_sandbox(namespace, name)
            except NotFound:
                return
            if not fresh["metadata"].get("deletionTimestamp"):
                await sandboxes.reconcile(fresh)

        hosts = HostProber(
            api=kube,
            agents=agents,
            index=index,
            claims=claims,
            reconcile_sandbox=reconcile_again,
            events=events,
            clock=clock,
            timings=ProbeTimings(
                grace=grace,
                heartbeat_every=settings.heartbeat_write_seconds,
                usage_every=settings.usage_write_seconds,
                orphan_grace=settings.orphan_grace_seconds,
            ),
        )
        pools = PoolFiller(
            api=kube,
            agents=agents,
            index=index,
            inventories=inventories,
            claims=claims,
            policy=policy,
            clock=clock,
            timings=PoolTimings(
                fill_parallelism=settings.pool_fill_parallelism,
                refill_delay=settings.pool_refill_delay_seconds,
                refill_floor=settings.pool_refill_floor,
                status_interval=settings.pool_status_interval_seconds,
                refresh_every=settings.pool_refresh_seconds,
                agent_timeout=settings.agent_timeout_seconds,
            ),
        )
        return cls(
            settings=settings,
            kube=kube,
            agents=agents,
            index=index,
            inventories=inventories,
            claims=claims,
            sandboxes=sandboxes,
            hosts=hosts,
            pools=pools,
            nodes=NodeHosts(kube, index, NodeAgents.of(settings)),
            claim_at_admission=ClaimAtAdmission(
                index, inventories, claims, policy, clock, settings.admission_claim_seconds
            ),
            queue=WorkQueue(backoff),
            clock=clock,
        )

    async def close(self) -> None:
        await self.queue.close()
        await self.agents.close()
        await self.kube.close()

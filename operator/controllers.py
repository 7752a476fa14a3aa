"""The operator's parts, built once at start and handed to the handlers.

One reconciler per kind, each given only what it uses: the API client, the agents, the
cluster's view (the index), the pools' inventories, the clock and its own timings, all made
here from the settings. Nothing below the handlers sees this object.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from tuxio.common.timeutil import Clock, SystemClock

from .agent_credentials import AgentCredentialsIssuer
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
from .launches import Launches
from .ledger_writer import LedgerWriter
from .nodes import NodeAgents, NodeHosts
from .placement import PlacementPolicy
from .pool_filler import PoolFiller, PoolTimings
from .sandbox_finalizer import SandboxFinalizer
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
    finalizer: SandboxFinalizer
    hosts: HostProber
    pools: PoolFiller
    nodes: NodeHosts
    credentials: AgentCredentialsIssuer
    claim_at_admission: ClaimAtAdmission
    # When each Sandbox arrived and its container was asked for (claim/creation latencies).
    launches: Launches
    # The usage ledger's writer, fed by the Sandbox watch and the finalizer.
    ledger: LedgerWriter
    # Sandboxes to reconcile: the newest body of each, one reconciliation at a time.
    queue: WorkQueue
    clock: Clock = field(default_factory=SystemClock)
    # Deleted Sandboxes whose containers are being destroyed, by UID.
    finalizing: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    @classmethod
    def build(
        cls, settings: OperatorSettings, kube: Kube, clock: Clock | None = None
    ) -> Controllers:
        shared = _Shared.of(settings, kube, clock or SystemClock())
        sandboxes = _sandboxes(shared)
        nodes = NodeHosts(kube, shared.index, NodeAgents.of(settings))
        return cls(
            settings=settings,
            kube=kube,
            agents=shared.agents,
            index=shared.index,
            inventories=shared.inventories,
            claims=shared.claims,
            sandboxes=sandboxes,
            finalizer=SandboxFinalizer(
                kube,
                shared.agents,
                shared.index,
                shared.events,
                shared.clock,
                shared.backoff,
                shared.grace,
                shared.ledger,
            ),
            hosts=_hosts(shared, sandboxes),
            pools=_pools(shared),
            nodes=nodes,
            credentials=AgentCredentialsIssuer(
                kube,
                nodes.names_of,
                namespace=settings.node_credentials_namespace,
                secret_prefix=settings.node_credentials_secret,
                ca_secret=settings.agent_ca_secret,
                requester=settings.agent_bootstrap_user,
                max_seconds=settings.agent_certificate_max_seconds,
            ),
            claim_at_admission=ClaimAtAdmission(
                shared.index,
                shared.inventories,
                shared.claims,
                shared.policy,
                shared.clock,
                settings.admission_claim_seconds,
                shared.launches,
            ),
            launches=shared.launches,
            ledger=shared.ledger,
            queue=WorkQueue(shared.backoff),
            clock=shared.clock,
        )

    async def close(self) -> None:
        await self.queue.close()
        await self.ledger.close()
        await self.agents.close()
        await self.kube.close()


@dataclass(frozen=True)
class _Shared:
    """What several reconcilers are given, made once."""

    settings: OperatorSettings
    kube: Kube
    clock: Clock
    backoff: Backoff
    grace: Grace
    agents: AgentRegistry
    index: ClusterIndex
    inventories: Inventories
    claims: Claims
    events: KopfEvents
    policy: PlacementPolicy
    launches: Launches
    ledger: LedgerWriter

    @classmethod
    def of(cls, settings: OperatorSettings, kube: Kube, clock: Clock) -> _Shared:
        index = ClusterIndex(clock.monotonic)
        budget = EventBudget(settings.event_rate_per_second, settings.event_burst, clock.monotonic)
        backoff = Backoff(settings.retry_delay_seconds, 30.0)

        def region_of(host: str) -> str | None:
            record = index.hosts.get(host)
            return None if record is None else record.view.region

        return cls(
            settings=settings,
            kube=kube,
            clock=clock,
            backoff=backoff,
            grace=Grace(settings.not_ready_after_seconds, settings.lost_after_seconds),
            agents=AgentRegistry(
                kube.read_secret,
                settings.agent_timeout_seconds,
                allow_loopback_plaintext=settings.allow_plaintext_loopback_agents,
            ),
            index=index,
            inventories=Inventories(),
            claims=Claims(index.sandboxes, clock.monotonic),
            events=KopfEvents(budget),
            policy=PlacementPolicy(
                placement_scorer(settings.distance_weight),
                settings.memory_overcommit,
                Locator(settings.geoip_database),
            ),
            launches=Launches(clock.monotonic, clock.now),
            ledger=LedgerWriter(settings.ledger_url, region_of, backoff),
        )


def _sandboxes(shared: _Shared) -> SandboxReconciler:
    settings = shared.settings
    return SandboxReconciler(
        api=shared.kube,
        agents=shared.agents,
        index=shared.index,
        inventories=shared.inventories,
        claims=shared.claims,
        policy=shared.policy,
        events=shared.events,
        clock=shared.clock,
        timings=SandboxTimings(
            backoff=shared.backoff,
            unschedulable_retry=settings.unschedulable_retry_seconds,
            usage_every=settings.usage_write_seconds,
        ),
        launches=shared.launches,
    )


def _hosts(shared: _Shared, sandboxes: SandboxReconciler) -> HostProber:
    kube, settings = shared.kube, shared.settings

    async def reconcile_again(namespace: str, name: str) -> None:
        """A Sandbox the probe found drifted or back: read afresh, reconciled."""
        try:
            fresh = await kube.get_sandbox(namespace, name)
        except NotFound:
            return
        if not fresh["metadata"].get("deletionTimestamp"):
            await sandboxes.reconcile(fresh)

    return HostProber(
        api=kube,
        agents=shared.agents,
        index=shared.index,
        claims=shared.claims,
        reconcile_sandbox=reconcile_again,
        events=shared.events,
        clock=shared.clock,
        timings=ProbeTimings(
            grace=shared.grace,
            heartbeat_every=settings.heartbeat_write_seconds,
            usage_every=settings.usage_write_seconds,
            orphan_grace=settings.orphan_grace_seconds,
        ),
    )


def _pools(shared: _Shared) -> PoolFiller:
    settings = shared.settings
    return PoolFiller(
        api=shared.kube,
        agents=shared.agents,
        index=shared.index,
        inventories=shared.inventories,
        claims=shared.claims,
        policy=shared.policy,
        clock=shared.clock,
        timings=PoolTimings(
            fill_parallelism=settings.pool_fill_parallelism,
            refill_delay=settings.pool_refill_delay_seconds,
            refill_floor=settings.pool_refill_floor,
            status_interval=settings.pool_status_interval_seconds,
            refresh_every=settings.pool_refresh_seconds,
            agent_timeout=settings.agent_timeout_seconds,
            failure_delay=settings.retry_delay_seconds,
        ),
    )

"""SandboxPools: warm containers kept running, and the loop that keeps them.

A warm container is an ordinary container on some host, labelled with its pool's UID and the
hash of the pool spec it was made from. The agents are the truth about which exist; the
operator keeps an inventory per pool (tuxio.operator.inventory), refreshed from the agents, and
takes containers out of it when a Sandbox claims one. A claim is recorded in the API before the
agent hears of it (in the Sandbox's create, by the claim webhook, or in its assignment
annotation), every container a Sandbox names is out of the pool for good, and the agent adopts
a warm container only while it is still one (If-Match), so one container is never adopted
twice, not even across operator restarts.

The fill loop (`PoolFiller.run`) is the refill policy: claims come first (the refill waits
while they keep coming, unless the pool runs low), at most `fill_parallelism` creations are in
flight, and count-only status changes are written at most every `status_interval`. A pool
with spec.autoscaling is sized first, each round (tuxio.operator.pool_policy.autoscaled_replicas),
its new replicas written through the scale subresource.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from tuxio.common.timeutil import Clock, format_time

from .agentclient import AgentError, AgentUnreachable
from .agents import AgentRegistry, CredentialsMissing
from .claims import Claims
from .containers import warm_spec
from .index import ClusterIndex
from .inventory import Inventories, PoolState, Warm, warm_of
from .kube import Kube, NotFound
from .labels import POOL_UID
from .metrics import CREATION_SECONDS, reconciliation
from .placement import PlacementPolicy, allocations
from .pool_models import SandboxPoolSpec
from .pool_policy import (
    Blocker,
    Fleet,
    autoscaled_replicas,
    choose_targets,
    demand_of,
    plan_pool,
    pool_hash,
    pool_request,
    pool_status,
    refill_hold,
    status_write_due,
)
from .records import HostRecord
from .scheduling import Allocation, assumed_disk

__all__ = ["PoolFiller", "PoolTimings", "Stopped"]

log = logging.getLogger(__name__)


class Stopped(Protocol):
    """True once the loop is to end (kopf's DaemonStopped is one)."""

    def __bool__(self) -> bool: ...


@dataclass(frozen=True)
class PoolTimings:
    fill_parallelism: int
    refill_delay: float
    refill_floor: float
    status_interval: float
    refresh_every: float
    agent_timeout: float
    # After a creation failed, its slot stays taken this long: an agent that refuses
    # connections (restarting) is not asked again at once, round after round.
    failure_delay: float = 1.0
    # A creation whose outcome is unknown (the agent gave no answer) is asked for again under
    # its own name, failure_delay apart, for at most this long (an agent's restart).
    creation_patience: float = 60.0


@dataclass
class PoolFiller:
    """Keeps every pool's warm containers, one loop per pool."""

    api: Kube
    agents: AgentRegistry
    index: ClusterIndex
    inventories: Inventories
    claims: Claims
    policy: PlacementPolicy
    clock: Clock
    timings: PoolTimings

    # ----- the fill loop -----------------------------------------------------------------

    async def run(
        self, uid: str, namespace: str, name: str, body: Mapping[str, Any], stopped: Stopped
    ) -> None:
        """Keep the pool's warm containers until `stopped`: woken by claims and spec changes.
        `body` is the pool as kopf keeps it up to date."""
        state = self.inventories.open(uid, namespace, name)
        writer = _PoolStatus(self.api, namespace, name, dict(body.get("status") or {}), self.clock)
        last_refresh = float("-inf")
        blocker: Blocker | None = None
        started = self.clock.monotonic()
        while not stopped:
            spec = SandboxPoolSpec.model_validate(dict(body["spec"]))
            generation = int(body["metadata"].get("generation") or 0)
            if spec.autoscaling is not None:
                spec = await self._autoscale(state, spec, started)
            else:
                state.autoscaled = None
            # Before this generation is written as observed: from then on, no creation for
            # the replicas before is asked for again (bench/chaos_audit.py relies on it).
            state.wanted = spec.replicas
            # What a claim took shows in status before the refill waits.
            await self._write_status(writer, state, spec, generation, blocker)
            await self._wait_for_claims_to_pause(writer, state, spec, generation, blocker, stopped)
            due = self.clock.monotonic() - last_refresh >= self.timings.refresh_every
            if due:
                last_refresh = self.clock.monotonic()
            state.wake.clear()
            with reconciliation("SandboxPool"):
                blocker = await self.sync(state, spec, refresh=due)
            await self._write_status(writer, state, spec, generation, blocker)
            # Woken by a claim, a creation that ended or a spec change; else in time to write
            # counts that were held back and to notice hosts that changed.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    state.wake.wait(), timeout=min(1.0, self.timings.status_interval)
                )

    async def _autoscale(
        self, state: PoolState, spec: SandboxPoolSpec, started: float
    ) -> SandboxPoolSpec:
        """The pool's replicas from its recent claims; written through /scale when changed."""
        auto = spec.autoscaling
        assert auto is not None
        current = spec.replicas if state.autoscaled is None else state.autoscaled
        now = self.clock.monotonic()
        demand = demand_of(
            state.claim_times,
            len(state.missed),
            max(state.last_take, started),
            now,
            auto.window_seconds,
        )
        state.missed.clear()
        room = self._room(state, spec, auto.max_replicas) if state.loaded.is_set() else current
        desired = autoscaled_replicas(current, auto, demand, room)
        state.autoscaled = desired
        if desired != spec.replicas:
            log.info(
                "pool %s/%s autoscaled: %d -> %d replicas "
                "(%d claims in %ds, %d missed, idle %.0fs)",
                state.namespace,
                state.name,
                spec.replicas,
                desired,
                demand.claims,
                auto.window_seconds,
                demand.misses,
                demand.idle_seconds,
            )
            with contextlib.suppress(NotFound):
                await self.api.scale_pool(state.namespace, state.name, desired)
        return spec.model_copy(update={"replicas": desired})

    def _room(self, state: PoolState, spec: SandboxPoolSpec, upto: int) -> int:
        """How many warm containers of the pool its hosts can hold, up to `upto`: those it
        has (on Ready hosts) and in flight, and the new ones that would still fit."""
        hosts = self.index.hosts
        usable = self._usable(state)
        have = len(usable) + len(state.inflight)
        if upto <= have:
            return have
        fleet = Fleet(
            {name: h.view for name, h in hosts.items()},
            allocations(self.index, self.inventories),
            self.policy.scorer,
            self.policy.memory_overcommit,
        )
        more = choose_targets(spec, usable, upto - have, fleet)
        return have + (0 if isinstance(more, Blocker) else len(more))

    async def _wait_for_claims_to_pause(
        self,
        writer: _PoolStatus,
        state: PoolState,
        spec: SandboxPoolSpec,
        generation: int,
        blocker: Blocker | None,
        stopped: Stopped,
    ) -> None:
        """Claims come first: the refill waits while claims keep coming (on a small host a
        container start takes the CPU of several claims), unless the pool runs low."""
        while not stopped:
            hold = refill_hold(
                self.clock.monotonic(),
                state.last_take,
                self.timings.refill_delay,
                state.ready_count(),
                spec.replicas,
                self.timings.refill_floor,
            )
            if hold <= 0:
                return
            # Woken early by another claim, whose take shows in status at once too.
            state.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.wake.wait(), timeout=hold)
            await self._write_status(writer, state, spec, generation, blocker)

    async def _write_status(
        self,
        writer: _PoolStatus,
        state: PoolState,
        spec: SandboxPoolSpec,
        generation: int,
        blocker: Blocker | None,
    ) -> None:
        ready_hosts = {h.name for h in self.index.hosts.values() if h.view.ready}
        at = format_time(self.clock.now())
        new = pool_status(writer.current, state, spec, generation, blocker, ready_hosts, at)
        await writer.write(new, self.timings.status_interval)

    # ----- one round ---------------------------------------------------------------------

    async def sync(self, state: PoolState, spec: SandboxPoolSpec, refresh: bool) -> Blocker | None:
        """One fill round: returns why the pool cannot fill, or None."""
        hosts = self.index.hosts
        state.wanted = spec.replicas
        if refresh or not state.loaded.is_set() or _unlisted(state, hosts):
            await self.refresh(state)
        self.claims.settle(state)
        current_hash = pool_hash(spec)
        # Warm containers on a host that is not Ready cannot be claimed: the pool re-warms on
        # the hosts that are, and trims the surplus once that host is back.
        usable = self._usable(state)
        plan = plan_pool(
            usable,
            spec.replicas,
            current_hash,
            spec.template,
            len(state.inflight),
            self.timings.fill_parallelism,
        )
        if plan.create or plan.delete:
            log.info(
                "pool %s/%s: %d warm (%d in flight), %d wanted: creating %d, removing %d",
                state.namespace,
                state.name,
                len(state.warm),
                len(state.inflight),
                spec.replicas,
                plan.create,
                len(plan.delete),
            )
        for name in plan.delete:
            await self._remove(state, name)
        if plan.create == 0:
            return None
        # Made only on hosts whose inventory was read (found by the chaos suite: an operator
        # restarted while its agent was down took "could not list" for "none there").
        waiting = _unlisted(state, hosts)
        hosts = {name: h for name, h in hosts.items() if name not in waiting}
        if waiting and not any(h.view.ready for h in hosts.values()):
            return None  # no Ready host read yet: the next round lists them again
        fleet = Fleet(
            {name: h.view for name, h in hosts.items()},
            allocations(self.index, self.inventories),  # sandboxes and every pool's warm ones
            self.policy.scorer,
            self.policy.memory_overcommit,
        )
        targets = choose_targets(spec, usable, plan.create, fleet)
        if isinstance(targets, Blocker):
            return targets
        for host in targets:
            self._start_creation(state, spec, current_hash, hosts[host])
        return None

    def _start_creation(
        self, state: PoolState, spec: SandboxPoolSpec, current_hash: str, host: HostRecord
    ) -> None:
        """In the background, so the pipeline stays full: the next round starts as soon as one
        creation ends, not when the slowest of a batch does."""
        request = pool_request(spec)
        name = f"pool-{state.uid[:8]}-{secrets.token_hex(4)}"
        state.inflight[name] = (
            host.name,
            Allocation.of(request.memory_bytes, request.cpus, assumed_disk(request)),
        )
        task = asyncio.create_task(self._create(state, spec, current_hash, host, name))
        state.tasks.add(task)
        task.add_done_callback(functools.partial(_created, state, name))

    async def _create(
        self,
        state: PoolState,
        spec: SandboxPoolSpec,
        current_hash: str,
        host: HostRecord,
        name: str,
    ) -> None:
        """Make `name` on `host`. A PUT converges, so when the agent gave no answer (its
        outcome unknown: the agent may have made the container and died, or restarted, before
        it answered) the same name is asked for again, still in flight meanwhile; made under
        a new name, the first one would turn up at the next listing as a surplus to destroy
        (found by the chaos suite: a pool that made 13 containers where it needed 12)."""
        spec_for = warm_spec(state.uid, spec, current_hash)
        give_up = self.clock.monotonic() + self.timings.creation_patience
        attempts = 0
        while True:
            attempts += 1
            host = self.index.hosts.get(host.name, host)  # as it is now (credentials, say)
            try:
                agent = await self.agents.client(host)
                if attempts > 1 and not self._still_wanted(state, spec.template, current_hash):
                    return  # checked again here: the client may have awaited a Secret
                started = time.perf_counter()
                made = await agent.put(name, spec_for)
                break
            except (AgentError, CredentialsMissing) as exc:
                log.warning(
                    "pool %s/%s: warm container %s on %s failed (try %d): %s",
                    state.namespace,
                    state.name,
                    name,
                    host.name,
                    attempts,
                    exc,
                )
                await asyncio.sleep(self.timings.failure_delay)  # still in flight meanwhile
                if not self._ask_again(state, host, exc, give_up):
                    return
                if not self._still_wanted(state, spec.template, current_hash):
                    return
        if made.state == "running":
            CREATION_SECONDS.labels("warm", spec.template).observe(time.perf_counter() - started)
        # Out of flight and into the pool in one step (the done callback runs a loop turn
        # later: counted in both meanwhile, the pool looked a container too full).
        state.inflight.pop(name, None)
        if not self.claims.taken(name):  # never back into the pool once a claim has it
            state.warm[name] = warm_of(made, host.name)

    def _ask_again(self, state: PoolState, host: HostRecord, exc: Exception, until: float) -> bool:
        """Whether a failed creation is asked for again under its name: only when its outcome
        is unknown (no answer, or a 502-504), while the pool and the host are still there,
        until `until` (a container left made after that, or not asked for again, is found by
        the next listing and counted, or removed as a surplus)."""
        unknown = isinstance(exc, AgentUnreachable) and (
            exc.status is None or exc.status in (502, 503, 504)
        )
        return (
            unknown
            and self.clock.monotonic() < until
            and self.inventories.get(state.uid) is state
            and host.name in self.index.hosts
        )

    def _still_wanted(self, state: PoolState, template: str, current_hash: str) -> bool:
        """Whether the pool still wants a creation in flight, counted as the fill plan counts
        (plan_pool: current containers on Ready hosts, and those in flight, this one among
        them) against the replicas the fill loop read last: scaled down meanwhile, it may not,
        and asked for again it would be made for the replicas before."""
        if state.wanted is None:
            return True
        current = sum(
            1 for w in self._usable(state) if w.spec_hash == current_hash and w.template == template
        )
        return current + len(state.inflight) <= state.wanted

    def _usable(self, state: PoolState) -> list[Warm]:
        """The pool's warm containers on Ready hosts: the ones a claim can take."""
        hosts = self.index.hosts
        return [w for w in state.warm.values() if w.host in hosts and hosts[w.host].view.ready]

    async def _remove(self, state: PoolState, name: str) -> None:
        warm = state.warm.get(name)
        hosts = self.index.hosts
        if warm is None or warm.host not in hosts:
            return  # its host is unknown now: keep counting it until it can be removed
        # Out of the pool before the first await: left in it while the agent was asked, a
        # claim could take it and be Running on a container this DELETE then destroyed.
        del state.warm[name]
        try:
            agent = await self.agents.client(hosts[warm.host])
            await agent.delete(name)
        except (AgentError, CredentialsMissing) as exc:
            log.info("pool %s/%s: cannot remove %s: %s", state.namespace, state.name, name, exc)
            state.warm.setdefault(name, warm)  # still there: counted until it can go

    async def refresh(self, state: PoolState) -> None:
        """Rebuild the inventory from what the agents say (hosts that do not answer keep theirs)."""
        hosts = self.index.hosts
        before = set(state.warm)
        found = {}
        answered: set[str] = set()
        for host in hosts.values():
            if not host.view.ready:
                continue
            try:
                agent = await self.agents.client(host)
                containers = await agent.list({POOL_UID: state.uid})
            except (AgentError, CredentialsMissing) as exc:
                log.info(
                    "pool %s/%s: cannot list %s: %s", state.namespace, state.name, host.name, exc
                )
                continue
            answered.add(host.name)
            state.listed.add(host.name)
            for container in containers:
                found[container.name] = warm_of(container, host.name)
        # Kept: what hosts that did not answer had, and what a creation added while the
        # agents were being listed (not in the listing if it was read before).
        kept = {
            n: w
            for n, w in state.warm.items()
            if w.host in hosts and (w.host not in answered or n not in before)
        }
        # Left out, as they are once every host has answered: the claimed (a claim made while
        # a later host was being listed may have taken one an earlier listing had) and those
        # being made (counted in flight until their creation ends and adds them; taken from a
        # listing, a claim could have them and the creation's end put them back for a second
        # claim: found by make test-slow, a container adopted by two Sandboxes).
        found = {
            n: w for n, w in found.items() if n not in state.inflight and not self.claims.taken(n)
        }
        state.warm = {**kept, **found}
        state.loaded.set()

    # ----- deletion ----------------------------------------------------------------------

    async def remove(self, uid: str) -> None:
        """Destroy a deleted pool's unclaimed warm containers on every host that answers."""
        state = self.inventories.close(uid)
        if state is None:
            return
        if state.tasks:  # creations in flight finish first, so the listing below has them all
            await asyncio.wait(set(state.tasks), timeout=self.timings.agent_timeout)
        await self.refresh(state)
        hosts = self.index.hosts
        for warm in list(state.warm.values()):
            if self.claims.taken(warm.name) or warm.host not in hosts:
                continue
            try:
                agent = await self.agents.client(hosts[warm.host])
                await agent.delete(warm.name)
            except (AgentError, CredentialsMissing) as exc:
                log.warning(
                    "pool %s/%s: cannot remove %s: %s", state.namespace, state.name, warm.name, exc
                )
        state.warm.clear()


def _created(state: PoolState, name: str, task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error(
            "pool %s/%s: making %s failed: %r", state.namespace, state.name, name, task.exception()
        )
    state.tasks.discard(task)
    state.inflight.pop(name, None)
    state.wake.set()


class _PoolStatus:
    """A pool's status as last written, and the writes: conditions at once, counts that grow
    at most every interval (pool_policy.status_write_due)."""

    def __init__(
        self, api: Kube, namespace: str, name: str, current: dict[str, Any], clock: Clock
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.name = name
        self.current = current
        self.clock = clock
        self._last = float("-inf")

    async def write(self, new: Mapping[str, Any], interval: float) -> None:
        changes = {k: v for k, v in new.items() if self.current.get(k) != v}
        since = self.clock.monotonic() - self._last
        if not status_write_due(self.current, changes, since, interval):
            return
        self._last = self.clock.monotonic()
        log.info(
            "pool %s/%s status: %s",
            self.namespace,
            self.name,
            {k: v for k, v in changes.items() if k != "conditions"},
        )
        try:
            await self.api.patch_pool_status(self.namespace, self.name, changes)
        except NotFound:
            pass
        except Exception as exc:  # the API server restarting, say: written on a later round
            # Raising would end the pool's loop, and the loop started again would forget the
            # creations in flight and make them twice (found by the chaos suite).
            log.warning(
                "pool %s/%s: status not written (%r); again on the next round",
                self.namespace,
                self.name,
                exc,
            )
            return
        self.current.update(changes)


def _unlisted(state: PoolState, hosts: Mapping[str, HostRecord]) -> set[str]:
    """The Ready hosts whose containers of the pool this process has not listed yet."""
    return {n for n, h in hosts.items() if h.view.ready and n not in state.listed}

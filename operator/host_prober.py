"""SandboxHost probing: capacity and heartbeat, then what the agent's containers tell.

One probe asks the agent for its host facts and for every container the operator made there,
and acts on that one list answer, child by child: drift (a Running sandbox whose container
died or vanished: reconciled again), a host's return (Lost sandboxes: reconciled back), usage
(written straight from the list, one status patch per sandbox whose usage is due), orphans (a
container whose Sandbox or pool no longer exists: destroyed). So the agent is asked twice per
probe whatever the number of sandboxes, and the API server only for what changed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tuxio.common.timeutil import Clock, format_time, seconds_since
from tuxio.nodeagent.models import ContainerStatus

from .agentclient import AgentClient, AgentError, AgentUnauthorized
from .agents import AgentRegistry, CredentialsMissing, InsecureEndpoint
from .claims import Claims
from .conditions import Reason
from .errors import ReconcileError
from .events import EventSink
from .host_status import Grace, healthy_status, silence, unready_status
from .index import ClusterIndex
from .kube import ApiError, Kube, NotFound
from .labels import MANAGED_BY, OPERATOR, POOL_UID, SANDBOX_UID
from .records import HostRecord, Placed
from .sandbox_status import Problem, problem_status, usage_of

__all__ = ["HostProber", "ProbeTimings", "SandboxReconcile"]

log = logging.getLogger(__name__)

# Reconcile one Sandbox again, by namespace and name (read afresh from the API).
SandboxReconcile = Callable[[str, str], Awaitable[None]]


@dataclass(frozen=True)
class ProbeTimings:
    grace: Grace
    heartbeat_every: float
    usage_every: float
    orphan_grace: float


@dataclass
class HostProber:
    """Probes hosts and acts on what their agents say."""

    api: Kube
    agents: AgentRegistry
    index: ClusterIndex
    claims: Claims
    reconcile_sandbox: SandboxReconcile
    events: EventSink
    clock: Clock
    timings: ProbeTimings

    async def probe(self, host: HostRecord, current: Mapping[str, Any]) -> dict[str, Any]:
        """Probe one host and act on what it says; returns the host's new status."""
        placed = self.index.sandboxes.on_host(host.name)
        for attempt in (1, 2):
            try:
                agent = await self.agents.client(host)
                info = await agent.host()
                containers = await agent.list({MANAGED_BY: OPERATOR})
                break
            except CredentialsMissing as exc:
                at = format_time(self.clock.now())
                reason = (
                    Reason.INSECURE_ENDPOINT
                    if isinstance(exc, InsecureEndpoint)
                    else Reason.CREDENTIALS_MISSING
                )
                return unready_status(current, reason, str(exc), at)
            except AgentUnauthorized as exc:
                # The 401 has dropped the host's client: asked again at once, with the token
                # its Secret holds now (the agent's was rotated), before calling it silent.
                if attempt == 2:
                    return await self._unreachable(host, current, placed, str(exc))
            except AgentError as exc:
                return await self._unreachable(host, current, placed, str(exc))
        now = self.clock.now()
        status = healthy_status(
            current, info, containers, placed, self.timings.heartbeat_every, now
        )
        by_name = {c.name: c for c in containers}
        for entry in placed:
            await self._act_on_sandbox(entry, by_name.get(entry.container), now)
        await self._sweep_orphans(host, agent, containers, placed, now)
        return status

    # ----- a host that does not answer ---------------------------------------------------

    async def _unreachable(
        self, host: HostRecord, current: Mapping[str, Any], placed: list[Placed], error: str
    ) -> dict[str, Any]:
        grace, now = self.timings.grace, self.clock.now()
        silent = silence(current.get("heartbeat"), host.not_ready_since, grace, now)
        if silent < grace.not_ready_after:
            left = grace.not_ready_after - silent
            log.info("host %s did not answer (%s); NotReady in %.0fs", host.name, error, left)
            return {}
        message = f"no answer for {silent:.0f}s: {error}"
        status = unready_status(current, Reason.AGENT_UNREACHABLE, message, format_time(now))
        if silent >= grace.lost_at:
            await self._mark_lost(host, placed, silent)
        return status

    async def _mark_lost(self, host: HostRecord, placed: list[Placed], silent: float) -> None:
        problem = Problem.host_lost(host.name, silent)
        for entry in placed:
            if entry.phase in ("Lost", "Failed"):
                continue
            try:
                body = await self.api.get_sandbox(entry.namespace, entry.name)
            except NotFound:
                continue
            at = format_time(self.clock.now())
            status = problem_status(body.get("status") or {}, problem, None, at)
            await self.api.patch_sandbox_status(entry.namespace, entry.name, status)
            self.events.warning(body, Reason.HOST_LOST, problem.message)

    # ----- each sandbox on the host ------------------------------------------------------

    async def _act_on_sandbox(
        self, entry: Placed, seen: ContainerStatus | None, now: datetime
    ) -> None:
        if entry.deleting:
            return  # its finalizer is destroying the container
        drifted = (
            entry.phase == "Running"
            and entry.state == "Running"
            and (seen is None or seen.state != "running")
        )
        if drifted or entry.phase == "Lost":
            if drifted:
                log.info(
                    "sandbox %s/%s drifted: container %s is %s",
                    entry.namespace,
                    entry.name,
                    entry.container,
                    seen.state if seen else "gone",
                )
            await self._reconcile(entry)
        elif entry.phase == "Running" and seen is not None:
            due = seconds_since(entry.usage_observed_at, now) >= self.timings.usage_every
            usage = usage_of(seen, format_time(now)) if due else None
            if usage is not None:
                await self._write_usage(entry, usage)

    async def _reconcile(self, entry: Placed) -> None:
        try:
            await self.reconcile_sandbox(entry.namespace, entry.name)
        except ReconcileError as exc:
            log.info("sandbox %s/%s: %s", entry.namespace, entry.name, exc)

    async def _write_usage(self, entry: Placed, usage: dict[str, Any]) -> None:
        """Usage from the probe's list answer, straight to status: one patch, no reread."""
        try:
            await self.api.patch_sandbox_status(entry.namespace, entry.name, {"usage": usage})
        except NotFound:
            return
        except ApiError as exc:
            log.warning("sandbox %s/%s: usage not written: %s", entry.namespace, entry.name, exc)

    # ----- orphans -----------------------------------------------------------------------

    async def _sweep_orphans(
        self,
        host: HostRecord,
        agent: AgentClient,
        containers: list[ContainerStatus],
        placed: list[Placed],
        now: datetime,
    ) -> None:
        """Destroy containers labelled with a Sandbox or pool that no longer exists."""
        mine = {entry.container for entry in placed}
        for container in containers:
            owner = self._orphan_of(container, mine)
            if owner is None or (now - container.created_at).total_seconds() < (
                self.timings.orphan_grace
            ):
                continue
            log.warning(
                "orphan sweep: destroying %s on %s (%s no longer exists)",
                container.name,
                host.name,
                owner,
            )
            try:
                await agent.delete(container.name)
            except AgentError as exc:
                log.warning("orphan sweep of %s failed: %s", container.name, exc)

    def _orphan_of(self, container: ContainerStatus, mine: set[str]) -> str | None:
        """The owner a container names that no longer exists (None: not an orphan)."""
        uid = container.labels.get(SANDBOX_UID)
        pool = container.labels.get(POOL_UID)
        if uid:
            if container.name in mine or self.index.sandboxes.knows(uid):
                return None
            return f"Sandbox {uid}"
        if pool:
            # A warm container whose pool is gone (deleted while the operator was down).
            if self.index.has_pool_uid(pool) or self.claims.taken(container.name):
                return None
            return f"SandboxPool {pool}"
        return None

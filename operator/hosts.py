"""SandboxHost probing: capacity and heartbeat, then what the agent's containers tell.

One probe asks the agent for its host facts and for every container the operator made there.
From that list it finds drift (a sandbox whose container died or vanished), orphans (a
container whose Sandbox no longer exists) and fresh usage, so the cost grows with hosts, not
with sandboxes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import kopf

from tuxio.nodeagent.models import ContainerStatus, HostInfo
from tuxio.operator.agentclient import AgentError, AgentUnreachable

from .conditions import HOST_READY, READY, Reason, condition, now, set_condition
from .kube import NotFound
from .pools import MANAGED_BY, OPERATOR, POOL_UID
from .runtime import CredentialsMissing, HostRecord, Placed, Runtime
from .sandboxes import SANDBOX_UID, event_target, status_changes

__all__ = ["healthy_status", "probe_host"]

log = logging.getLogger(__name__)

Reconcile = Callable[[str, str], Awaitable[None]]


def _age(stamp: str | None) -> float:
    if not stamp:
        return float("inf")
    then = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return (datetime.now(UTC) - then).total_seconds()


def healthy_status(
    current: Mapping[str, Any],
    info: HostInfo,
    containers: list[ContainerStatus],
    placed: list[Placed],
    heartbeat_every: float,
) -> dict[str, Any]:
    """The status of a host whose agent answered. Pure."""
    new: dict[str, Any] = {
        "capacity": {
            "cpus": info.cpus.total,
            "sharedCpus": len(info.cpus.shared),
            "memoryBytes": info.memory.total_bytes,
            "memoryAvailableBytes": info.memory.available_bytes,
        },
        "allocation": {
            "sandboxes": len(placed),
            "memoryBytes": sum(p.memory_bytes for p in placed),
            "containers": len(containers),
            "running": sum(1 for c in containers if c.state == "running"),
        },
        "templates": sorted(t.name for t in info.templates),
        "agentVersion": info.version,
        "cgroupVersion": info.cgroup_version,
        "load": info.load[0],
        "conditions": set_condition(
            list(current.get("conditions") or []),
            condition(HOST_READY, True, Reason.AGENT_READY, f"agent {info.version} answered"),
        ),
    }
    # Memory available and load move all the time: they alone do not warrant a write.
    changed = status_changes(current, new)
    changed.pop("load", None)
    moved = bool(changed.keys() - {"capacity"}) or _capacity_moved(
        current.get("capacity"), new["capacity"]
    )
    if moved or _age(current.get("heartbeat")) >= heartbeat_every:
        new["heartbeat"] = now()
    else:
        new["heartbeat"] = current.get("heartbeat")
        new["capacity"] = current.get("capacity")
        new["load"] = current.get("load")
    return new


def _capacity_moved(old: Any, new: Mapping[str, Any]) -> bool:
    if not isinstance(old, Mapping):
        return True
    return any(old.get(k) != new[k] for k in ("cpus", "sharedCpus", "memoryBytes"))


async def probe_host(
    rt: Runtime,
    host: HostRecord,
    current: Mapping[str, Any],
    placed: list[Placed],
    known_uids: Callable[[str], bool],
    known_pools: Callable[[str], bool],
    claimed: Callable[[str], bool],
    reconcile_sandbox: Reconcile,
) -> dict[str, Any]:
    """Probe one host and act on what it says; returns the host's new status."""
    try:
        agent = await rt.agents.client(host)
        info = await agent.host()
        containers = await agent.list({MANAGED_BY: OPERATOR})
    except CredentialsMissing as exc:
        return _unready(current, Reason.CREDENTIALS_MISSING, str(exc))
    except AgentError as exc:
        if isinstance(exc, AgentUnreachable) and exc.status == 401:
            await rt.agents.forget(host.name)
        return await _unreachable(rt, host, current, placed, str(exc))

    status = healthy_status(current, info, containers, placed, rt.settings.heartbeat_write_seconds)
    await _act_on_containers(
        rt, host, containers, placed, known_uids, known_pools, claimed, reconcile_sandbox
    )
    return status


def _unready(current: Mapping[str, Any], reason: str, message: str) -> dict[str, Any]:
    return {
        "conditions": set_condition(
            list(current.get("conditions") or []), condition(HOST_READY, False, reason, message)
        )
    }


async def _unreachable(
    rt: Runtime, host: HostRecord, current: Mapping[str, Any], placed: list[Placed], error: str
) -> dict[str, Any]:
    silent = _age(current.get("heartbeat"))
    settings = rt.settings
    if silent == float("inf"):
        silent = _age(host.not_ready_since) + settings.not_ready_after_seconds
    if silent < settings.not_ready_after_seconds:
        log.info(
            "host %s did not answer (%s); NotReady in %.0fs",
            host.name,
            error,
            settings.not_ready_after_seconds - silent,
        )
        return {}
    status = _unready(current, Reason.AGENT_UNREACHABLE, f"no answer for {silent:.0f}s: {error}")
    if silent >= settings.not_ready_after_seconds + settings.lost_after_seconds:
        await _mark_lost(rt, host, placed, silent)
    return status


async def _mark_lost(rt: Runtime, host: HostRecord, placed: list[Placed], silent: float) -> None:
    for entry in placed:
        if entry.phase in ("Lost", "Failed"):
            continue
        try:
            body = await rt.kube.get_sandbox(entry.namespace, entry.name)
        except NotFound:
            continue
        status = dict(body.get("status") or {})
        conditions = set_condition(
            list(status.get("conditions") or []),
            condition(
                READY, False, Reason.HOST_LOST, f"{host.name} has not answered for {silent:.0f}s"
            ),
        )
        await rt.kube.patch_sandbox_status(
            entry.namespace, entry.name, {"phase": "Lost", "conditions": conditions}
        )
        kopf.warn(
            event_target(body),
            reason=Reason.HOST_LOST,
            message=f"{host.name} has not answered for {silent:.0f}s",
        )


async def _act_on_containers(
    rt: Runtime,
    host: HostRecord,
    containers: Iterable[ContainerStatus],
    placed: list[Placed],
    known_uids: Callable[[str], bool],
    known_pools: Callable[[str], bool],
    claimed: Callable[[str], bool],
    reconcile_sandbox: Reconcile,
) -> None:
    by_name = {c.name: c for c in containers}
    for entry in placed:
        if entry.deleting:
            continue  # its finalizer is destroying the container
        seen = by_name.get(entry.container)
        drifted = (
            entry.phase == "Running"
            and entry.state == "Running"
            and (seen is None or seen.state != "running")
        )
        returned = entry.phase == "Lost"
        usage_due = (
            entry.phase == "Running"
            and _age(entry.usage_observed_at) >= rt.settings.usage_write_seconds
        )
        if drifted or returned or usage_due:
            if drifted:
                log.info(
                    "sandbox %s/%s drifted: container %s is %s",
                    entry.namespace,
                    entry.name,
                    entry.container,
                    seen.state if seen else "gone",
                )
            try:
                await reconcile_sandbox(entry.namespace, entry.name)
            except (kopf.TemporaryError, kopf.PermanentError) as exc:
                log.info("sandbox %s/%s: %s", entry.namespace, entry.name, exc)
    mine = {entry.container for entry in placed}
    agent = await rt.agents.client(host)
    for container in by_name.values():
        uid = container.labels.get(SANDBOX_UID)
        pool = container.labels.get(POOL_UID)
        if uid:
            if container.name in mine or known_uids(uid):
                continue
            owner = f"Sandbox {uid}"
        elif pool:
            # A warm container whose pool is gone (deleted while the operator was down).
            if known_pools(pool) or claimed(container.name):
                continue
            owner = f"SandboxPool {pool}"
        else:
            continue
        if (
            _age(container.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"))
            < rt.settings.orphan_grace_seconds
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

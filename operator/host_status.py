"""What a SandboxHost's status should be, and the one rule of when a host is lost. Pure.

A host whose agent has not answered for `not_ready_after` turns NotReady; `lost_after` more and
it is lost: its sandboxes turn Lost, and deleting one no longer waits for the agent. The
silence is counted from the last heartbeat; a host that has none counts from when it turned
NotReady, which is `not_ready_after` into its silence (so the probe and the finalizer agree
on the moment a host is lost).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tuxio.common.timeutil import format_time, seconds_since
from tuxio.nodeagent.models import ContainerStatus, HostInfo

from .conditions import HOST_READY, Reason, condition, set_condition, status_changes
from .records import HostRecord, Placed

__all__ = ["Grace", "healthy_status", "host_lost", "silence", "unready_status"]


@dataclass(frozen=True)
class Grace:
    """How long a silent agent is waited for: NotReady after the first, lost after both."""

    not_ready_after: float
    lost_after: float

    @property
    def lost_at(self) -> float:
        return self.not_ready_after + self.lost_after


def silence(
    heartbeat: str | None, not_ready_since: str | None, grace: Grace, now: datetime
) -> float:
    """Seconds since the host's agent last answered (infinite: never, as far as is known)."""
    if heartbeat:
        return seconds_since(heartbeat, now)
    if not_ready_since:
        return seconds_since(not_ready_since, now) + grace.not_ready_after
    return float("inf")


def host_lost(record: HostRecord, grace: Grace, now: datetime) -> bool:
    """A host that is not Ready and has been silent beyond both grace periods."""
    if record.view.ready:
        return False
    return silence(record.heartbeat, record.not_ready_since, grace, now) >= grace.lost_at


def unready_status(
    current: Mapping[str, Any], reason: Reason, message: str, at: str
) -> dict[str, Any]:
    """A host's status with Ready=False for `reason`."""
    return {
        "conditions": set_condition(
            current.get("conditions") or [], condition(HOST_READY, False, reason, message), at
        )
    }


def healthy_status(
    current: Mapping[str, Any],
    info: HostInfo,
    containers: list[ContainerStatus],
    placed: list[Placed],
    heartbeat_every: float,
    now: datetime,
) -> dict[str, Any]:
    """The status of a host whose agent answered."""
    at = format_time(now)
    new: dict[str, Any] = {
        "capacity": {
            "cpus": info.cpus.total,
            "sharedCpus": len(info.cpus.shared),
            "memoryBytes": info.memory.total_bytes,
            "memoryAvailableBytes": info.memory.available_bytes,
            **_disk_capacity(info),
        },
        "allocation": {
            "sandboxes": len(placed),
            "memoryBytes": sum(p.memory_bytes for p in placed),
            "diskBytes": sum(p.disk_bytes for p in placed),
            "containers": len(containers),
            "running": sum(1 for c in containers if c.state == "running"),
        },
        "templates": sorted(t.name for t in info.templates),
        "agentVersion": info.version,
        "cgroupVersion": info.cgroup_version,
        "load": info.load[0],
        "conditions": set_condition(
            current.get("conditions") or [],
            condition(HOST_READY, True, Reason.AGENT_READY, f"agent {info.version} answered"),
            at,
        ),
    }
    # Memory available and load move all the time: they alone do not warrant a write.
    changed = status_changes(current, new)
    changed.pop("load", None)
    moved = bool(changed.keys() - {"capacity"}) or _capacity_moved(
        current.get("capacity"), new["capacity"]
    )
    if moved or seconds_since(current.get("heartbeat"), now) >= heartbeat_every:
        new["heartbeat"] = at
    else:
        new["heartbeat"] = current.get("heartbeat")
        new["capacity"] = current.get("capacity")
        new["load"] = current.get("load")
    return new


def _capacity_moved(old: Any, new: Mapping[str, Any]) -> bool:
    if not isinstance(old, Mapping):
        return True
    return any(old.get(k) != new.get(k) for k in _STEADY)


# What moves all the time (free memory and disk) does not warrant a write on its own; these do.
_STEADY = ("cpus", "sharedCpus", "memoryBytes", "diskBytes", "diskBelowReserve", "diskBackend")


def _disk_capacity(info: HostInfo) -> dict[str, Any]:
    disk = info.disk
    if disk is None:  # an agent from before disk quotas
        return {}
    return {
        "diskBytes": max(0, disk.total_bytes - disk.reserve_bytes),
        "diskFreeBytes": disk.free_bytes,
        "diskInodes": disk.total_inodes,
        "diskFreeInodes": disk.free_inodes,
        "diskDefaultBytes": disk.default_bytes,
        "diskBelowReserve": disk.below_reserve,
        "diskBackend": disk.backend,
    }

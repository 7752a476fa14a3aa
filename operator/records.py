"""The API objects as the operator keeps them: small immutable records parsed from bodies.

Pure: each function reads a body (a watch event's object) and returns a record, or None for a
Sandbox that has no host yet.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .conditions import HOST_READY, find_condition
from .geo import GeoPoint
from .host_models import SandboxHostSpec
from .labels import ASSIGNMENT
from .models import SandboxSpec, bytes_of
from .pool_models import SandboxPoolSpec
from .scheduling import DEFAULT_DISK_BYTES, Allocation, HostView

__all__ = [
    "HostRecord",
    "Placed",
    "PoolInfo",
    "assignment_of",
    "host_record",
    "placed_of",
]


@dataclass(frozen=True)
class HostRecord:
    """A SandboxHost: its spec, what the scheduler knows of it, and when it last answered."""

    name: str
    spec: SandboxHostSpec
    view: HostView
    heartbeat: str | None
    not_ready_since: str | None


def host_record(name: str, body: Mapping[str, Any]) -> HostRecord:
    spec = SandboxHostSpec.model_validate(body.get("spec") or {})
    status = body.get("status") or {}
    ready = find_condition(status.get("conditions"), HOST_READY)
    capacity = status.get("capacity") or {}
    location = spec.location
    view = HostView(
        name=name,
        ready=ready.get("status") == "True",
        unschedulable=spec.unschedulable,
        templates=frozenset(status.get("templates") or []),
        shared_cpus=int(capacity.get("sharedCpus", 0)),
        memory_bytes=int(capacity.get("memoryBytes", 0)),
        disk_bytes=None if "diskBytes" not in capacity else int(capacity["diskBytes"]),
        disk_default_bytes=int(capacity.get("diskDefaultBytes", DEFAULT_DISK_BYTES)),
        disk_below_reserve=bool(capacity.get("diskBelowReserve", False)),
        labels=dict((body.get("metadata") or {}).get("labels") or {}),
        region=location.region,
        max_sandboxes=spec.max_sandboxes,
        load=float(status.get("load") or 0.0),
        location=None
        if location.latitude is None or location.longitude is None
        else GeoPoint(location.latitude, location.longitude, name),
    )
    not_ready_since = None
    if ready and ready.get("status") != "True":
        not_ready_since = ready.get("lastTransitionTime")
    return HostRecord(name, spec, view, status.get("heartbeat"), not_ready_since)


@dataclass(frozen=True)
class Placed:
    """A Sandbox that has a host."""

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
    disk_bytes: int = DEFAULT_DISK_BYTES

    @property
    def allocation(self) -> Allocation:
        return Allocation.of(self.memory_bytes, self.cpus, self.disk_bytes)


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
        disk_bytes=DEFAULT_DISK_BYTES
        if spec.resources.disk is None
        else bytes_of(spec.resources.disk),
        cpus=spec.resources.cpus,
        usage_observed_at=(status.get("usage") or {}).get("observedAt"),
        deleting=bool((body.get("metadata") or {}).get("deletionTimestamp")),
    )


@dataclass(frozen=True)
class PoolInfo:
    """A SandboxPool: who it is and its spec."""

    uid: str
    namespace: str
    name: str
    spec: SandboxPoolSpec

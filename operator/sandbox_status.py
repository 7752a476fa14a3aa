"""What a Sandbox's status should be: pure functions of what was observed.

The reconciler observes (the API's Sandbox, the agent's answer), then asks these functions for
the status, and writes only what differs. Every failure status comes from one builder,
`problem_status`, fed by a `Problem` that names the phase, the condition and the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tuxio.common.timeutil import add_seconds, format_time
from tuxio.nodeagent.models import ContainerStatus

from .conditions import READY, SCHEDULED, Reason, condition, set_condition
from .models import SandboxSpec

__all__ = [
    "Problem",
    "expires_at",
    "needs_reconcile",
    "problem_status",
    "running_status",
    "usage_of",
]


def expires_at(creation: str, spec: SandboxSpec) -> str | None:
    """When the Sandbox is deleted: its creation plus lifetime.ttlSeconds."""
    if not spec.lifetime.ttl_seconds:
        return None
    return add_seconds(creation, spec.lifetime.ttl_seconds)


# The phases a Sandbox can settle in with no host in its status.
SETTLED_UNPLACED = ("Failed", "Lost")


def needs_reconcile(body: Mapping[str, Any]) -> bool:
    """Whether a watch event calls for a reconciliation (level-triggered, as kubebuilder's
    controllers decide): a Sandbox not placed yet, or whose spec changed since its status was
    written."""
    meta = body.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return False
    status = body.get("status") or {}
    settled = status.get("observedGeneration") == meta.get("generation")
    if not status.get("host"):
        # Not placed, unless it failed for good before any agent answered for it (refused,
        # its host gone): status then names no host, and its phase settles it.
        return not (settled and status.get("phase") in SETTLED_UNPLACED)
    return not settled


def usage_of(observed: ContainerStatus, at: str) -> dict[str, Any] | None:
    """status.usage from an agent's answer, read `at` (None: the container does not run)."""
    if observed.usage is None:
        return None
    return {
        "cpuSeconds": observed.usage.cpu_seconds,
        "memoryBytes": observed.usage.memory_bytes,
        "pids": observed.usage.pids,
        **_disk_usage(observed),
        "observedAt": at,
    }


def _disk_usage(observed: ContainerStatus) -> dict[str, Any]:
    disk = observed.disk
    if disk is None:
        return {}
    found = {
        "diskBytes": disk.used_bytes,
        "diskLimitBytes": disk.limit_bytes,
        "inodes": disk.used_inodes,
        "inodesLimit": disk.limit_inodes,
    }
    return {key: value for key, value in found.items() if value is not None}


def running_status(
    current: Mapping[str, Any],
    observed: ContainerStatus,
    generation: int,
    usage_due: bool,
    at: str,
) -> dict[str, Any]:
    """The status of a Sandbox whose agent converged its container to the spec."""
    running = observed.state == "running"
    new: dict[str, Any] = {
        "phase": "Running" if running else "Stopped",
        "cpuset": observed.limits.cpuset if observed.limits else None,
        "startedAt": format_time(observed.started_at) if observed.started_at else None,
        "observedGeneration": generation,
        "message": "; ".join(observed.warnings) or None,
    }
    if running:
        ready = condition(
            READY, True, Reason.RUNNING, "the container runs with its limits in force", generation
        )
    else:
        ready = condition(READY, False, Reason.STOPPED, "spec.state is Stopped", generation)
    new["conditions"] = set_condition(current.get("conditions") or [], ready, at)
    usage = usage_of(observed, at)
    if usage is not None and (usage_due or not current.get("usage")):
        new["usage"] = usage
    return new


@dataclass(frozen=True)
class Problem:
    """Why a Sandbox is not (yet) Ready, as its status says it.

    `condition` turns False with `reason` and `message`; `phase`, when given, replaces the
    phase; `settles` says whether status.observedGeneration moves to this generation (the
    problem is the answer to it, not a step on the way); `status_message`, when given, is
    written to status.message too."""

    reason: Reason
    message: str
    phase: str | None = None
    condition: str = READY
    settles: bool = True
    status_message: str | None = None

    @classmethod
    def pool_missing(cls, message: str) -> Problem:
        return cls(Reason.POOL_MISSING, message, "Pending", SCHEDULED, settles=False)

    @classmethod
    def unschedulable(cls, message: str) -> Problem:
        return cls(Reason.UNSCHEDULABLE, message, "Pending", SCHEDULED)

    @classmethod
    def host_gone(cls, host: str) -> Problem:
        return cls(Reason.HOST_GONE, f"SandboxHost {host} no longer exists", "Lost")

    @classmethod
    def host_lost(cls, host: str, silent: float) -> Problem:
        return cls(Reason.HOST_LOST, f"{host} has not answered for {silent:.0f}s", "Lost")

    @classmethod
    def agent_unreachable(cls, message: str) -> Problem:
        return cls(Reason.AGENT_UNREACHABLE, message, settles=False)

    @classmethod
    def agent_rejected(cls, message: str) -> Problem:
        return cls(Reason.AGENT_REJECTED, message, "Failed", status_message=message)

    @classmethod
    def container_gone(cls, state: str | None) -> Problem:
        """restartPolicy Never and the container died (`state`) or vanished (None)."""
        what = (
            "the container is gone from its host" if state is None else f"the container is {state}"
        )
        reason = Reason.CONTAINER_VANISHED if state is None else Reason.CONTAINER_DIED
        return cls(reason, f"{what} and restartPolicy is Never", "Failed", status_message=what)


def problem_status(
    current: Mapping[str, Any], problem: Problem, generation: int | None, at: str
) -> dict[str, Any]:
    """The status fields that tell `problem` (generation None: the problem is the host's,
    not an answer to any generation of the Sandbox)."""
    new: dict[str, Any] = {}
    if problem.phase is not None:
        new["phase"] = problem.phase
    if problem.settles and generation is not None:
        new["observedGeneration"] = generation
    if problem.status_message is not None:
        new["message"] = problem.status_message
    new["conditions"] = set_condition(
        current.get("conditions") or [],
        condition(problem.condition, False, problem.reason, problem.message, generation),
        at,
    )
    return new

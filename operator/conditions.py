"""Conditions and reasons: named constants, and the pure functions that compute them and
the change set of a status."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

__all__ = [
    "HOST_READY",
    "READY",
    "SCHEDULED",
    "Reason",
    "condition",
    "find_condition",
    "set_condition",
    "status_changes",
]

SCHEDULED = "Scheduled"
READY = "Ready"
HOST_READY = "Ready"


class Reason(StrEnum):
    """Reasons of conditions and Events, one CamelCase word each."""

    # Sandbox Scheduled
    HOST_CHOSEN = "HostChosen"  # a host was chosen and recorded
    UNSCHEDULABLE = "Unschedulable"  # no host fits now; retried
    POOL_MISSING = "PoolMissing"  # the poolRef names no SandboxPool
    CLAIMED = "ClaimedFromPool"  # a warm container of the pool was adopted
    POOL_EMPTY = "PoolEmpty"  # the pool had no warm container: created cold instead
    # Sandbox Ready
    CREATING = "Creating"  # the agent is making or starting the container
    RUNNING = "Running"  # the container runs with its limits in force
    STOPPED = "Stopped"  # spec.state is Stopped and the container is stopped
    AGENT_UNREACHABLE = "AgentUnreachable"  # no answer from the host's agent; retried
    AGENT_REJECTED = "AgentRejected"  # the agent refused the spec (a 4xx); not retried
    CONTAINER_DIED = "ContainerDied"  # the container stopped by itself
    CONTAINER_VANISHED = "ContainerVanished"  # the container is gone from its host
    HOST_LOST = "HostLost"  # the host has been unreachable beyond the grace periods
    HOST_GONE = "HostGone"  # the SandboxHost object no longer exists
    # SandboxPool Ready
    FILLED = "Filled"  # readyReplicas warm containers run
    FILLING = "Filling"  # warm containers are being made
    NO_HOST = "NoHost"  # no Ready host fits the pool's placement
    NO_CAPACITY = "NoCapacity"  # the hosts that fit are full
    TEMPLATE_MISSING = "TemplateMissing"  # no host has the pool's template
    # SandboxHost Ready
    AGENT_READY = "AgentReady"  # the agent answered the last probe
    CREDENTIALS_MISSING = "CredentialsMissing"  # the token Secret cannot be read
    INSECURE_ENDPOINT = "InsecureEndpoint"  # an http:// agent where plaintext is not allowed
    # Events only
    DELETED = "Deleted"  # a deleted Sandbox's container was destroyed
    NOT_OURS = "ContainerNotOurs"  # the container named is another Sandbox's: left to it


def condition(
    type_: str, ok: bool | None, reason: Reason, message: str = "", generation: int | None = None
) -> dict[str, Any]:
    status = "Unknown" if ok is None else ("True" if ok else "False")
    found: dict[str, Any] = {
        "type": type_,
        "status": status,
        "reason": str(reason),
        "message": message,
    }
    if generation is not None:
        found["observedGeneration"] = generation
    return found


def set_condition(
    conditions: list[dict[str, Any]] | tuple[dict[str, Any], ...], new: dict[str, Any], at: str
) -> list[dict[str, Any]]:
    """A copy of `conditions` with `new` in place of its type, changed `at` (RFC 3339).

    lastTransitionTime moves only when the status flips, so an unchanged condition stays equal
    and a status computed twice compares equal (and is not written twice).
    """
    result = []
    placed = False
    for old in conditions:
        if old.get("type") != new["type"]:
            result.append(old)
            continue
        placed = True
        stamp = old.get("lastTransitionTime") if old.get("status") == new["status"] else None
        result.append({**new, "lastTransitionTime": stamp or at})
    if not placed:
        result.append({**new, "lastTransitionTime": at})
    return result


def status_changes(current: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of `new` that differ from `current` (a merge patch; None deletes)."""
    return {k: v for k, v in new.items() if current.get(k) != v}


def find_condition(conditions: Any, type_: str) -> dict[str, Any]:
    """The condition of `type_` in a status' conditions ({} when there is none)."""
    found: dict[str, Any] = next(
        (c for c in conditions or [] if isinstance(c, dict) and c.get("type") == type_), {}
    )
    return found

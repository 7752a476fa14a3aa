"""How many visitors' sandboxes the hosts can hold, from their SandboxHost objects (pure).

A host counts while it is Ready and schedulable; it holds what its memory allows at the
visitor sandbox's size, or its `spec.maxSandboxes` if that is smaller. The site's cap is the
sum over the hosts, and never more than the site's own `max_sandboxes`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["host_room", "site_cap"]


def _ready(host: Mapping[str, Any]) -> bool:
    conditions = (host.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def host_room(host: Mapping[str, Any], sandbox_memory_bytes: int) -> int:
    """Visitors' sandboxes this host can hold (0 when it is not Ready or unschedulable)."""
    spec = host.get("spec") or {}
    capacity = (host.get("status") or {}).get("capacity") or {}
    if spec.get("unschedulable") or not _ready(host):
        return 0
    room = int(capacity.get("memoryBytes") or 0) // sandbox_memory_bytes
    limit = spec.get("maxSandboxes")
    return min(room, int(limit)) if limit is not None else room


def site_cap(hosts: Iterable[Mapping[str, Any]], sandbox_memory_bytes: int, ceiling: int) -> int:
    return min(ceiling, sum(host_room(h, sandbox_memory_bytes) for h in hosts))

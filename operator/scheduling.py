"""Placement: which host a sandbox goes to. Pure functions, no I/O.

`choose_host` filters hosts that can take the sandbox, then ranks them with a scorer. The
scorer is a plain function of a host and the request, so another policy (geography, cost) is
another function passed in, and every decision comes with the reason it was made.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "Allocation",
    "Decision",
    "HostView",
    "Request",
    "Scorer",
    "Unschedulable",
    "choose_host",
    "load_score",
    "rank_hosts",
    "reject_reason",
]


@dataclass(frozen=True)
class HostView:
    """What the scheduler knows of one SandboxHost."""

    name: str
    ready: bool
    unschedulable: bool
    templates: frozenset[str]
    shared_cpus: int
    memory_bytes: int
    labels: Mapping[str, str] = field(default_factory=dict)
    region: str | None = None
    max_sandboxes: int | None = None
    load: float = 0.0


@dataclass(frozen=True)
class Allocation:
    """What is already placed on a host."""

    sandboxes: int = 0
    memory_bytes: int = 0
    cpus: int = 0


@dataclass(frozen=True)
class Request:
    """What one sandbox needs."""

    template: str
    cpus: int
    memory_bytes: int
    region: str | None = None
    host_selector: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    host: str
    score: float
    reason: str


@dataclass(frozen=True)
class Unschedulable:
    """No host fits; `reasons` counts why each host was left out."""

    reasons: dict[str, int]

    @property
    def message(self) -> str:
        if not self.reasons:
            return "no SandboxHost exists"
        parts = [f"{count} {why}" for why, count in sorted(self.reasons.items())]
        return "no host fits: " + ", ".join(parts)


Scorer = Callable[[HostView, Allocation, Request], float]


def reject_reason(
    host: HostView, used: Allocation, request: Request, memory_overcommit: float
) -> str | None:
    """Why `host` cannot take the request, or None when it can."""
    if not host.ready:
        return "not Ready"
    if host.unschedulable:
        return "unschedulable"
    if request.template not in host.templates:
        return f"without template {request.template}"
    if request.region and host.region != request.region:
        return f"outside region {request.region}"
    if any(host.labels.get(k) != v for k, v in request.host_selector.items()):
        return "not matching hostSelector"
    if request.cpus > host.shared_cpus:
        return f"with fewer than {request.cpus} shared cores"
    if host.max_sandboxes is not None and used.sandboxes >= host.max_sandboxes:
        return "at maxSandboxes"
    if used.memory_bytes + request.memory_bytes > host.memory_bytes * memory_overcommit:
        return "out of memory"
    return None


def load_score(host: HostView, used: Allocation, request: Request) -> float:
    """Higher is better: free memory, few sandboxes per shared core, a light load average.

    Limits are caps, not reservations, so memory is weighed, not reserved one to one.
    """
    free_memory = max(
        0.0, 1.0 - (used.memory_bytes + request.memory_bytes) / max(1, host.memory_bytes)
    )
    crowding = (used.cpus + request.cpus) / max(1, host.shared_cpus)
    busy = host.load / max(1, host.shared_cpus)
    return round(free_memory - 0.1 * crowding - 0.5 * busy, 6)


def rank_hosts(
    hosts: Iterable[HostView],
    allocations: Mapping[str, Allocation],
    request: Request,
    *,
    scorer: Scorer = load_score,
    memory_overcommit: float = 2.0,
) -> list[str]:
    """The hosts that fit, best first (ties by name)."""
    fitting = []
    for host in hosts:
        used = allocations.get(host.name, Allocation())
        if reject_reason(host, used, request, memory_overcommit) is None:
            fitting.append((-scorer(host, used, request), host.name))
    return [name for _, name in sorted(fitting)]


def choose_host(
    hosts: Iterable[HostView],
    allocations: Mapping[str, Allocation],
    request: Request,
    *,
    scorer: Scorer = load_score,
    memory_overcommit: float = 2.0,
) -> Decision | Unschedulable:
    """The best host for `request`; ties go to the name that sorts first (deterministic)."""
    best: Decision | None = None
    reasons: dict[str, int] = {}
    for host in sorted(hosts, key=lambda h: h.name):
        used = allocations.get(host.name, Allocation())
        why = reject_reason(host, used, request, memory_overcommit)
        if why is not None:
            reasons[why] = reasons.get(why, 0) + 1
            continue
        score = scorer(host, used, request)
        if best is None or score > best.score:
            best = Decision(
                host.name,
                score,
                f"best score {score:.3f} of the hosts that fit ({used.sandboxes} sandboxes there)",
            )
    return best if best is not None else Unschedulable(reasons)

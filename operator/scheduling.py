"""Placement: which host a sandbox goes to. Pure functions, no I/O.

`choose_host` filters hosts that can take the sandbox, then ranks them with a scorer. The
scorer is a plain function of a host and the request, so another policy (cost, say) is
another function passed in, and every decision comes with the reason it was made.

The default scorer, `placement_scorer`, adds nearness to the visitor (great-circle distance
from the client's GeoIP location to the host's) to the load score: a near host wins unless
it is much fuller than a farther one, and a full host (no room left) is not a candidate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

from .geo import GeoPoint, haversine_km

__all__ = [
    "CAPACITY",
    "DEFAULT_DISK_BYTES",
    "HALF_CIRCUMFERENCE_KM",
    "Allocation",
    "Cause",
    "Decision",
    "HostView",
    "Rejection",
    "Request",
    "Scorer",
    "Tally",
    "Unschedulable",
    "assumed_disk",
    "choose_host",
    "disk_of",
    "distance_km",
    "explain",
    "load_score",
    "placement_scorer",
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
    location: GeoPoint | None = None
    # Disk: what the data directory can give sandboxes (its size less the agent's reserve;
    # None: not reported, not counted), the limit a sandbox naming none gets there, and
    # whether the agent refuses new containers for want of free space or inodes.
    disk_bytes: int | None = None
    disk_default_bytes: int = 2**30
    disk_below_reserve: bool = False


@dataclass(frozen=True)
class Allocation:
    """What is already placed on a host: the one place its numbers are added up."""

    sandboxes: int = 0
    memory_bytes: int = 0
    cpus: int = 0
    disk_bytes: int = 0

    def __add__(self, other: Allocation) -> Allocation:
        return Allocation(
            self.sandboxes + other.sandboxes,
            self.memory_bytes + other.memory_bytes,
            self.cpus + other.cpus,
            self.disk_bytes + other.disk_bytes,
        )

    def __sub__(self, other: Allocation) -> Allocation:
        return Allocation(
            self.sandboxes - other.sandboxes,
            self.memory_bytes - other.memory_bytes,
            self.cpus - other.cpus,
            self.disk_bytes - other.disk_bytes,
        )

    @staticmethod
    def of(memory_bytes: int, cpus: int, disk_bytes: int = 0) -> Allocation:
        """One sandbox (or warm container) with these limits."""
        return Allocation(1, memory_bytes, cpus, disk_bytes)


@dataclass(frozen=True)
class Request:
    """What one sandbox needs."""

    template: str
    cpus: int
    memory_bytes: int
    # None: the sandbox names no disk limit and gets the host's default.
    disk_bytes: int | None = None
    regions: frozenset[str] = frozenset()  # empty: any region
    host_selector: Mapping[str, str] = field(default_factory=dict)
    client: GeoPoint | None = None  # where the visitor is, when GeoIP could tell


PlacementKind = Literal["Nearest", "Region", "Load"]


@dataclass(frozen=True)
class Decision:
    host: str
    score: float
    reason: str
    kind: PlacementKind = "Load"
    distance_km: float | None = None


class Tally:
    """Allocations per host, added up in place: a decision adds up hundreds of warm
    containers, and an Allocation made for each would cost more than the decision itself."""

    def __init__(self, start: Mapping[str, Allocation] | None = None) -> None:
        self._sums: dict[str, list[int]] = {
            host: [a.sandboxes, a.memory_bytes, a.cpus, a.disk_bytes]
            for host, a in (start or {}).items()
        }

    def add(
        self, host: str, memory_bytes: int, cpus: int, sandboxes: int = 1, disk_bytes: int = 0
    ) -> None:
        found = self._sums.get(host)
        if found is None:
            self._sums[host] = [sandboxes, memory_bytes, cpus, disk_bytes]
        else:
            found[0] += sandboxes
            found[1] += memory_bytes
            found[2] += cpus
            found[3] += disk_bytes

    def totals(self) -> dict[str, Allocation]:
        return {host: Allocation(*sums) for host, sums in self._sums.items()}


class Cause(Enum):
    """Why a host cannot take a request, as a type (the words are in `Rejection.text`)."""

    NOT_READY = "not ready"
    UNSCHEDULABLE = "unschedulable"
    NO_TEMPLATE = "no template"
    OUTSIDE_REGION = "outside region"
    NOT_SELECTED = "not selected"
    FEW_CORES = "too few cores"
    MAX_SANDBOXES = "at maxSandboxes"
    NO_MEMORY = "out of memory"
    NO_DISK = "out of disk"


# The causes that room on a host (not its kind) would remove.
CAPACITY = frozenset({Cause.FEW_CORES, Cause.MAX_SANDBOXES, Cause.NO_MEMORY, Cause.NO_DISK})


@dataclass(frozen=True)
class Rejection:
    """Why one host cannot take a request: its cause and the words for people."""

    cause: Cause
    text: str


_NOT_READY = Rejection(Cause.NOT_READY, "not Ready")
_UNSCHEDULABLE = Rejection(Cause.UNSCHEDULABLE, "unschedulable")
_NOT_SELECTED = Rejection(Cause.NOT_SELECTED, "not matching hostSelector")
_MAX_SANDBOXES = Rejection(Cause.MAX_SANDBOXES, "at maxSandboxes")
_NO_MEMORY = Rejection(Cause.NO_MEMORY, "out of memory")
_NO_DISK = Rejection(Cause.NO_DISK, "out of disk")
_BELOW_RESERVE = Rejection(Cause.NO_DISK, "below their disk reserve")


@dataclass(frozen=True)
class Unschedulable:
    """No host fits; `reasons` counts why each host was left out (in words), `causes` are
    the causes among them."""

    reasons: dict[str, int]
    causes: frozenset[Cause] = frozenset()

    @property
    def message(self) -> str:
        if not self.reasons:
            return "no SandboxHost exists"
        parts = [f"{count} {why}" for why, count in sorted(self.reasons.items())]
        return "no host fits: " + ", ".join(parts)


Scorer = Callable[[HostView, Allocation, Request], float]


def reject_reason(
    host: HostView, used: Allocation, request: Request, memory_overcommit: float
) -> Rejection | None:
    """Why `host` cannot take the request, or None when it can."""
    if not host.ready:
        return _NOT_READY
    if host.unschedulable:
        return _UNSCHEDULABLE
    if request.template not in host.templates:
        return Rejection(Cause.NO_TEMPLATE, f"without template {request.template}")
    if request.regions and host.region not in request.regions:
        regions = ", ".join(sorted(request.regions))
        return Rejection(Cause.OUTSIDE_REGION, f"outside region {regions}")
    if any(host.labels.get(k) != v for k, v in request.host_selector.items()):
        return _NOT_SELECTED
    if request.cpus > host.shared_cpus:
        return Rejection(Cause.FEW_CORES, f"with fewer than {request.cpus} shared cores")
    if host.max_sandboxes is not None and used.sandboxes >= host.max_sandboxes:
        return _MAX_SANDBOXES
    if used.memory_bytes + request.memory_bytes > host.memory_bytes * memory_overcommit:
        return _NO_MEMORY
    if host.disk_below_reserve:
        return _BELOW_RESERVE
    if host.disk_bytes is not None and used.disk_bytes + disk_of(host, request) > host.disk_bytes:
        return _NO_DISK
    return None


# What a sandbox naming no disk limit is counted as where its host is not known yet.
DEFAULT_DISK_BYTES = 2**30


def assumed_disk(request: Request) -> int:
    """The disk a request is counted for before its host reports its default."""
    return DEFAULT_DISK_BYTES if request.disk_bytes is None else request.disk_bytes


def disk_of(host: HostView, request: Request) -> int:
    """The disk limit the request gets on `host` (its own, or the host's default)."""
    return host.disk_default_bytes if request.disk_bytes is None else request.disk_bytes


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


HALF_CIRCUMFERENCE_KM = 20015.1  # the farthest two places on Earth can be


def distance_km(host: HostView, request: Request) -> float | None:
    """From the visitor to the host; None when either place is unknown."""
    if request.client is None or host.location is None:
        return None
    return haversine_km(request.client, host.location)


def placement_scorer(distance_weight: float) -> Scorer:
    """Load plus nearness: `distance_weight` for a host next to the visitor, 0 at the far side
    of the Earth, linear between. A host without a location counts as the farthest; without a
    client location this is the load score alone. (The load part is load_score's formula,
    inlined: this runs once per host per decision.)"""

    def score(host: HostView, used: Allocation, request: Request) -> float:
        free_memory = 1.0 - (used.memory_bytes + request.memory_bytes) / max(1, host.memory_bytes)
        shared = max(1, host.shared_cpus)
        base = (
            max(0.0, free_memory)
            - 0.1 * (used.cpus + request.cpus) / shared
            - 0.5 * host.load / shared
        )
        if request.client is None or host.location is None:
            return base
        km = min(haversine_km(request.client, host.location), HALF_CIRCUMFERENCE_KM)
        return base + distance_weight * (1.0 - km / HALF_CIRCUMFERENCE_KM)

    return score


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
    best: tuple[float, HostView, Allocation] | None = None
    fitting = 0
    reasons: dict[str, int] = {}
    causes: set[Cause] = set()
    for host in sorted(hosts, key=lambda h: h.name):
        used = allocations.get(host.name, Allocation())
        why = reject_reason(host, used, request, memory_overcommit)
        if why is not None:
            reasons[why.text] = reasons.get(why.text, 0) + 1
            causes.add(why.cause)
            continue
        fitting += 1
        score = scorer(host, used, request)
        if best is None or score > best[0]:
            best = (score, host, used)
    if best is None:
        return Unschedulable(reasons, frozenset(causes))
    return _decision(*best, request, fitting)


def _decision(
    score: float, host: HostView, used: Allocation, request: Request, fitting: int
) -> Decision:
    ranking = (
        f"score {score:.3f}, best of {fitting} hosts that fit ({used.sandboxes} sandboxes there)"
    )
    kind, km, why = explain(host, request)
    return Decision(host.name, score, f"{why}; {ranking}", kind, km)


def explain(host: HostView, request: Request) -> tuple[PlacementKind, float | None, str]:
    """How a host was chosen for a request: Nearest (with the distance), Region or Load."""
    km = distance_km(host, request)
    if request.client is not None and km is not None:
        km = round(km, 1)
        where = f" ({request.client.label})" if request.client.label else ""
        return "Nearest", km, f"nearest with room: {km:.0f} km from the client{where}"
    if request.regions:
        return "Region", None, f"least loaded in region {', '.join(sorted(request.regions))}"
    return "Load", None, "least loaded"

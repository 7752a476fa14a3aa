"""The tux.io/v1alpha1 API types: the one source of truth for the CRDs in crds/.

Every field carries its description (it becomes `kubectl explain` text), its validation and its
default right here; rules that span fields are CEL `x-kubernetes-validations` next to the model
they constrain. `tuxio.operator.crdgen` turns these models into structural CRD schemas, and the
operator parses what it reads from the API server with the same models. This module holds the
Sandbox and the building blocks the three kinds share; `pool_models` and `host_models` the
other two kinds.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel

from tuxio.common.quantity import QUANTITY_PATTERN, parse_quantity

__all__ = [
    "API_VERSION",
    "DNS_LABEL",
    "EMPTY_DEFAULT",
    "GROUP",
    "VERSION",
    "ApiModel",
    "Condition",
    "Conditions",
    "NetworkSpec",
    "Placement",
    "PlacementStatus",
    "PoolRef",
    "Resources",
    "SandboxLifetime",
    "SandboxSpec",
    "SandboxStatus",
    "SandboxUsage",
    "bytes_of",
    "cores_of",
]

GROUP = "tux.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
# Object fields default to {} so that the defaults of their own fields apply when omitted.
EMPTY_DEFAULT: dict[str, Any] = {"default": {}}


def _quantity(description: str) -> Any:
    """A Kubernetes quantity field: an integer or a string such as '256Mi' or '500m'."""
    return WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            # Bounded, so the API server can bound the cost of the CEL rules that parse it.
            "maxLength": 32,
            "description": description,
        }
    )


Quantity = int | str


def bytes_of(value: Quantity) -> int:
    """A memory quantity in bytes ('256Mi' -> 268435456; a fraction of a byte is dropped)."""
    return int(parse_quantity(value))


def cores_of(value: Quantity) -> float:
    """A CPU quantity in cores ('500m' -> 0.5)."""
    return float(parse_quantity(value))


class ApiModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


# ----- shared ----------------------------------------------------------------------------


class Condition(ApiModel):
    """The state of one aspect of an object, as Kubernetes conditions are everywhere."""

    type: str = Field(description="Condition type, e.g. Ready or Scheduled.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="One CamelCase word saying why, for machines.")
    message: str = Field("", description="Why, for people.")
    last_transition_time: str = Field(
        description="When the status last changed (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    observed_generation: int | None = Field(
        None, description="The .metadata.generation the condition was computed from."
    )


Conditions = Annotated[
    list[Condition],
    Field(
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}
    ),
]


class Resources(ApiModel):
    """What one sandbox may use, enforced through cgroups and rlimits on its host."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    # has() guards: the API server checks these rules against the {} default.
                    "rule": "!has(self.memorySwap) || !has(self.memory) || "
                    "quantity(string(self.memorySwap))"
                    ".compareTo(quantity(string(self.memory))) >= 0",
                    "message": "memorySwap (memory plus swap) must be at least memory",
                },
                {
                    "rule": "!has(self.memory) || "
                    "quantity(string(self.memory)).compareTo(quantity('16Mi')) >= 0",
                    "message": "memory must be at least 16Mi",
                },
                {
                    "rule": "!has(self.disk) || "
                    "quantity(string(self.disk)).compareTo(quantity('32Mi')) >= 0",
                    "message": "disk must be at least 32Mi",
                },
                {
                    "rule": "!has(self.disk) || "
                    "quantity(string(self.disk)).compareTo(quantity('16Ti')) <= 0",
                    "message": "disk must be at most 16Ti",
                },
                {
                    "rule": "!has(self.cpuQuota) || !has(self.cpus) || "
                    "(quantity(string(self.cpuQuota)).compareTo(quantity('10m')) >= 0 && "
                    "quantity(string(self.cpuQuota))"
                    ".asApproximateFloat() <= double(self.cpus))",
                    "message": "cpuQuota must be at least 10m and at most cpus",
                },
            ]
        }
    )

    cpus: int = Field(
        1, ge=1, le=256, description="Cores the sandbox is pinned to (a cpuset of shared cores)."
    )
    burst_cpu_seconds: int = Field(
        0,
        ge=0,
        le=3600,
        alias="burstCPUSeconds",
        description="CPU seconds the sandbox may use on all shared cores before it is narrowed "
        "to its own `cpus`; 0 pins it from the start.",
    )
    memory: Annotated[Quantity, _quantity("Memory limit, at least 16Mi (default 256Mi).")] = "256Mi"
    memory_swap: Annotated[
        Quantity | None,
        _quantity("Limit on memory plus swap, at least `memory`; unset means no swap."),
    ] = None
    pids: int = Field(
        256, ge=8, le=65536, description="Maximum number of tasks (the fork-bomb cap)."
    )
    nofile: int = Field(1024, ge=64, le=1048576, description="RLIMIT_NOFILE of every process.")
    nproc: int = Field(512, ge=8, le=65536, description="RLIMIT_NPROC of every process.")
    cpu_quota: Annotated[
        Quantity | None,
        _quantity(
            "Optional hard cap on CPU time in cores ('500m' is half a core), enforced by the "
            "CFS quota; unset leaves only the cpuset."
        ),
    ] = None
    disk: Annotated[
        Quantity | None,
        _quantity(
            "Limit on the sandbox's writable layer (what it writes over its template), at "
            "least 32Mi; unset means the host's default (1Gi unless the host's agent says "
            "otherwise). Writing beyond it fails with ENOSPC. Fixed when the container is made."
        ),
    ] = None
    inodes: int | None = Field(
        None,
        ge=1024,
        le=4294967295,
        description="Limit on the files (inodes) of the writable layer, at least 1024; unset "
        "means the host's default (65536 unless the host's agent says otherwise). Fixed when "
        "the container is made.",
    )


class NetworkSpec(ApiModel):
    """Network of the sandbox: none unless asked."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.mode) || self.mode != 'bridge' || has(self.bridge)",
                    "message": "network mode bridge needs the name of a host bridge",
                }
            ]
        }
    )

    mode: Literal["none", "bridge"] = Field(
        "none", description="none: loopback only. bridge: one interface on a host bridge."
    )
    bridge: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$",
        description="The host bridge for mode bridge; it must exist on every chosen host.",
    )


class Placement(ApiModel):
    """Where a sandbox may run, and who it is for."""

    client_ip: str | None = Field(
        None,
        alias="clientIP",
        max_length=45,
        description="The visitor's IP address, as a web frontend sees it: the sandbox goes to "
        "the nearest host with room (by the operator's GeoIP database). An address that "
        "cannot be placed (private, unknown, no database) falls back to region, then load.",
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "isIP(self)", "message": "clientIP must be an IPv4 or IPv6 address"}
            ]
        },
    )
    region: str | None = Field(
        None, max_length=63, description="Only hosts whose location.region is this one."
    )
    host_selector: dict[str, str] | None = Field(
        None, description="Only hosts (SandboxHost objects) with all these labels."
    )


class PlacementStatus(ApiModel):
    """How the host was chosen."""

    reason: Literal["Nearest", "Region", "Load"] = Field(
        description="Nearest: by distance to the client (with load); Region: by load within "
        "spec.placement.region; Load: by load alone."
    )
    distance_km: float | None = Field(
        None, description="Great-circle distance from the client's location to the host."
    )
    client_location: str | None = Field(
        None, description="Where GeoIP placed spec.placement.clientIP, e.g. 'Amsterdam, NL'."
    )
    message: str = Field("", description="The decision in words, with its numbers.")


# ----- Sandbox -----------------------------------------------------------------------------


class PoolRef(ApiModel):
    """A SandboxPool in the same namespace to take a warm container from."""

    name: str = Field(pattern=DNS_LABEL, max_length=63, description="Name of the SandboxPool.")


class SandboxLifetime(ApiModel):
    """How long a sandbox lives."""

    ttl_seconds: int | None = Field(
        None,
        ge=1,
        le=31_536_000,
        description="Delete the sandbox this many seconds after it was created.",
    )


class SandboxSpec(ApiModel):
    """The desired state of a Sandbox: one disposable, boxed-in Linux container."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.template) != has(self.poolRef)",
                    "message": "set exactly one of template and poolRef",
                },
                {
                    "rule": "has(self.template) == has(oldSelf.template) && "
                    "(!has(self.template) || self.template == oldSelf.template)",
                    "message": "template is immutable",
                },
                {
                    "rule": "has(self.poolRef) == has(oldSelf.poolRef) && "
                    "(!has(self.poolRef) || self.poolRef == oldSelf.poolRef)",
                    "message": "poolRef is immutable",
                },
                {
                    "rule": "self.network == oldSelf.network",
                    "message": "network is immutable",
                },
            ]
        }
    )

    template: str | None = Field(
        None,
        pattern=DNS_LABEL,
        max_length=63,
        description="Template (base root filesystem) to clone, e.g. busybox or debian. Immutable.",
    )
    pool_ref: PoolRef | None = Field(
        None, description="Take a warm container from this SandboxPool instead. Immutable."
    )
    resources: Resources = Field(
        default_factory=Resources,
        description="Limits enforced on the container: cores, CPU burst and quota, memory, "
        "memory+swap, pids, nofile and nproc.",
        json_schema_extra=EMPTY_DEFAULT,
    )
    lifetime: SandboxLifetime = Field(
        default_factory=SandboxLifetime,
        description="How long the sandbox lives.",
        json_schema_extra=EMPTY_DEFAULT,
    )
    placement: Placement = Field(
        default_factory=Placement,
        description="Constraints on the host it runs on.",
        json_schema_extra=EMPTY_DEFAULT,
    )
    network: NetworkSpec = Field(
        default_factory=NetworkSpec,
        description="Network of the container: none unless asked. Immutable.",
        json_schema_extra=EMPTY_DEFAULT,
    )
    state: Literal["Running", "Stopped"] = Field("Running", description="Run or stop it.")
    restart_policy: Literal["Always", "Never"] = Field(
        "Always",
        description="Always: a container that died or vanished is recreated. Never: the "
        "Sandbox turns Failed instead.",
    )


Phase = Literal[
    "Pending", "Scheduled", "Creating", "Running", "Stopped", "Failed", "Lost", "Terminating"
]


class SandboxUsage(ApiModel):
    """Resource use, as the host's agent last reported it."""

    cpu_seconds: float = Field(description="CPU time used since start.")
    memory_bytes: int = Field(description="Memory in use.")
    pids: int = Field(description="Tasks running.")
    disk_bytes: int | None = Field(
        None, description="Bytes its writable layer holds (what it wrote over its template)."
    )
    disk_limit_bytes: int | None = Field(
        None, description="Bytes its writable layer may hold, as its filesystem counts them."
    )
    inodes: int | None = Field(None, description="Inodes its writable layer holds.")
    inodes_limit: int | None = Field(None, description="Inodes its writable layer may hold.")
    observed_at: str = Field(
        description="When this was read.", json_schema_extra={"format": "date-time"}
    )


class SandboxStatus(ApiModel):
    """The observed state of a Sandbox."""

    phase: Phase | None = Field(None, description="Where the sandbox is in its life.")
    host: str | None = Field(None, description="The SandboxHost it was scheduled to.")
    container_name: str | None = Field(None, description="Its LXC container on that host.")
    template: str | None = Field(None, description="The template its container came from.")
    cpuset: str | None = Field(None, description="Cores it is pinned to, e.g. '2-3'.")
    started_at: str | None = Field(
        None, description="When its container started.", json_schema_extra={"format": "date-time"}
    )
    expires_at: str | None = Field(
        None,
        description="When it will be deleted (from lifetime.ttlSeconds).",
        json_schema_extra={"format": "date-time"},
    )
    from_pool: str | None = Field(
        None, description="The SandboxPool it took its container from, if any."
    )
    placement: PlacementStatus | None = Field(
        None, description="Why it runs on its host: reason, distance to the client."
    )
    message: str | None = Field(None, description="The latest notable thing that happened.")
    observed_generation: int | None = Field(
        None, description="The .metadata.generation this status reflects."
    )
    conditions: Conditions = Field(
        default_factory=list, description="Scheduled and Ready, with reasons."
    )
    usage: SandboxUsage | None = Field(None, description="Resource use.")

"""The tux.io/v1alpha1 API types: the one source of truth for the CRDs in crds/.

Every field carries its description (it becomes `kubectl explain` text), its validation and its
default right here; rules that span fields are CEL `x-kubernetes-validations` next to the model
they constrain. `tuxio.operator.crdgen` turns these models into structural CRD schemas, and the
operator parses what it reads from the API server with the same models.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from kubernetes.utils import parse_quantity
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "AgentCredentials",
    "Condition",
    "HostAllocation",
    "HostCapacity",
    "HostLocation",
    "NetworkSpec",
    "Placement",
    "PlacementStatus",
    "PoolPlacement",
    "PoolRef",
    "Resources",
    "SandboxHostSpec",
    "SandboxHostStatus",
    "SandboxLifetime",
    "SandboxPoolSpec",
    "SandboxPoolStatus",
    "SandboxSpec",
    "SandboxStatus",
    "SandboxUsage",
    "bytes_of",
    "cores_of",
]

GROUP = "tux.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
# Object fields default to {} so that the defaults of their own fields apply when omitted.
_EMPTY_DEFAULT: dict[str, Any] = {"default": {}}
_QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$"


def _quantity(description: str) -> Any:
    """A Kubernetes quantity field: an integer or a string such as '256Mi' or '500m'."""
    return WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": _QUANTITY,
            # Bounded, so the API server can bound the cost of the CEL rules that parse it.
            "maxLength": 32,
            "description": description,
        }
    )


Quantity = int | str


def bytes_of(value: Quantity) -> int:
    """A memory quantity in bytes ('256Mi' -> 268435456)."""
    return int(parse_quantity(value))


def cores_of(value: Quantity) -> float:
    """A CPU quantity in cores ('500m' -> 0.5)."""
    return float(Decimal(parse_quantity(value)))


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


# ----- shared ----------------------------------------------------------------------------


class Condition(_Model):
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


class Resources(_Model):
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


class NetworkSpec(_Model):
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


class Placement(_Model):
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


class PoolPlacement(_Model):
    """Where a pool keeps its warm containers."""

    regions: list[Annotated[str, Field(max_length=63)]] | None = Field(
        None,
        max_length=64,
        description="Only hosts in these regions (location.region); unset: any region.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    spread: Literal["Regions", "None"] = Field(
        "Regions",
        description="Regions: warm containers are spread evenly over the regions that have a "
        "host that fits, so visitors everywhere find one near them. None: by load alone.",
    )
    host_selector: dict[str, str] | None = Field(
        None, description="Only hosts (SandboxHost objects) with all these labels."
    )


class PlacementStatus(_Model):
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


class PoolRef(_Model):
    """A SandboxPool in the same namespace to take a warm container from."""

    name: str = Field(pattern=_DNS_LABEL, max_length=63, description="Name of the SandboxPool.")


class SandboxLifetime(_Model):
    """How long a sandbox lives."""

    ttl_seconds: int | None = Field(
        None,
        ge=1,
        le=31_536_000,
        description="Delete the sandbox this many seconds after it was created.",
    )


class SandboxSpec(_Model):
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
        pattern=_DNS_LABEL,
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
        json_schema_extra=_EMPTY_DEFAULT,
    )
    lifetime: SandboxLifetime = Field(
        default_factory=SandboxLifetime,
        description="How long the sandbox lives.",
        json_schema_extra=_EMPTY_DEFAULT,
    )
    placement: Placement = Field(
        default_factory=Placement,
        description="Constraints on the host it runs on.",
        json_schema_extra=_EMPTY_DEFAULT,
    )
    network: NetworkSpec = Field(
        default_factory=NetworkSpec,
        description="Network of the container: none unless asked. Immutable.",
        json_schema_extra=_EMPTY_DEFAULT,
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


class SandboxUsage(_Model):
    """Resource use, as the host's agent last reported it."""

    cpu_seconds: float = Field(description="CPU time used since start.")
    memory_bytes: int = Field(description="Memory in use.")
    pids: int = Field(description="Tasks running.")
    observed_at: str = Field(
        description="When this was read.", json_schema_extra={"format": "date-time"}
    )


class SandboxStatus(_Model):
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


# ----- SandboxPool -------------------------------------------------------------------------


class SandboxPoolSpec(_Model):
    """Warm containers of one template and set of limits, ready to be claimed."""

    replicas: int = Field(0, ge=0, le=10000, description="Warm containers to keep ready.")
    template: str = Field(
        pattern=_DNS_LABEL, max_length=63, description="Template of the warm containers."
    )
    resources: Resources = Field(
        default_factory=Resources,
        description="Limits of the warm containers (a claiming Sandbox may change them).",
        json_schema_extra=_EMPTY_DEFAULT,
    )
    placement: PoolPlacement = Field(
        default_factory=PoolPlacement,
        description="The hosts that keep them: regions to pin them to, spread over regions.",
        json_schema_extra=_EMPTY_DEFAULT,
    )


class SandboxPoolStatus(_Model):
    """The observed state of a SandboxPool."""

    replicas: int = Field(0, description="Warm containers that exist or are being made.")
    ready_replicas: int = Field(0, description="Warm containers running and ready to claim.")
    selector: str | None = Field(None, description="Label selector of its containers.")
    observed_generation: int | None = Field(None, description="Generation this reflects.")
    conditions: Conditions = Field(default_factory=list, description="Ready, with reasons.")
    last_handled_configuration: str | None = Field(
        None,
        description="The spec (and labels and annotations) the operator last acted on, as "
        "JSON: its change detection, written with the status it led to.",
    )


# ----- SandboxHost -------------------------------------------------------------------------


class AgentCredentials(_Model):
    """Where the agent's bearer token (and optionally its CA) are kept."""

    name: str = Field(max_length=253, description="Name of the Secret.")
    namespace: str = Field(max_length=63, description="Namespace of the Secret.")
    token_key: str = Field("token", description="Key of the bearer token in the Secret.")
    ca_key: str | None = Field(
        None, description="Key of a PEM CA bundle to verify the agent's TLS certificate."
    )


class HostLocation(_Model):
    """Where the host is."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.latitude) == has(self.longitude)",
                    "message": "set both latitude and longitude, or neither",
                }
            ]
        }
    )

    latitude: float | None = Field(None, ge=-90, le=90, description="Degrees north.")
    longitude: float | None = Field(None, ge=-180, le=180, description="Degrees east.")
    region: str | None = Field(None, max_length=63, description="A region name, e.g. eu-west.")


class SandboxHostSpec(_Model):
    """An LXC host running the tuxio node agent."""

    endpoint: str = Field(
        pattern=r"^https?://[^\s/]+(:[0-9]+)?/?$",
        description="Base URL of the agent, e.g. https://host1.example.org:7443.",
    )
    credentials_secret_ref: AgentCredentials = Field(description="The agent's token.")
    location: HostLocation = Field(
        default_factory=HostLocation,
        description="Where the host is, for placement near visitors.",
        json_schema_extra=_EMPTY_DEFAULT,
    )
    unschedulable: bool = Field(False, description="True: no new sandboxes are placed here.")
    max_sandboxes: int | None = Field(
        None, ge=0, description="Cap on sandboxes on this host; unset means no cap."
    )


class HostCapacity(_Model):
    """What the host offers, as its agent reports it."""

    cpus: int = Field(description="Cores the agent may use.")
    shared_cpus: int = Field(description="Cores handed out to sandboxes.")
    memory_bytes: int = Field(description="Host memory.")
    memory_available_bytes: int = Field(description="Memory available now.")


class HostAllocation(_Model):
    """What the scheduler has placed on the host."""

    sandboxes: int = Field(description="Sandboxes scheduled to this host.")
    memory_bytes: int = Field(description="Sum of their memory limits.")
    containers: int = Field(description="Containers the agent reports.")
    running: int = Field(description="Of those, running.")


class SandboxHostStatus(_Model):
    """The observed state of a SandboxHost."""

    capacity: HostCapacity | None = Field(None, description="What the host offers.")
    allocation: HostAllocation | None = Field(None, description="What is placed on it.")
    templates: list[str] = Field(default_factory=list, description="Templates present.")
    agent_version: str | None = Field(None, description="Version of its agent.")
    cgroup_version: int | None = Field(None, description="cgroup version of the host.")
    load: float | None = Field(None, description="1-minute load average.")
    heartbeat: str | None = Field(
        None,
        description="When the agent last answered.",
        json_schema_extra={"format": "date-time"},
    )
    conditions: Conditions = Field(default_factory=list, description="Ready, with reasons.")
    last_handled_configuration: str | None = Field(
        None,
        description="The spec (and labels and annotations) the operator last acted on, as "
        "JSON: its change detection, written with the status it led to.",
    )

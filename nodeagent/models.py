"""The agent's API types: the one source of truth for its OpenAPI schema.

Schemas go by direction: ContainerSpec is what a client asks for, ContainerStatus is what the
agent observed on the host (read back from LXC and the cgroup files, never echoed from the
request). Field names are camelCase on the wire, as in Kubernetes.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel

from tuxio.common.quantity import QUANTITY_PATTERN, parse_bytes

__all__ = [
    "MIN_DISK_BYTES",
    "MIN_INODES",
    "MIN_MEMORY_BYTES",
    "NAME_PATTERN",
    "BurstStatus",
    "ContainerList",
    "ContainerSpec",
    "ContainerState",
    "ContainerStatus",
    "CpuInfo",
    "DesiredState",
    "DirectoryListing",
    "DiskInfo",
    "DiskStatus",
    "ErrorBody",
    "ExecRequest",
    "ExecResult",
    "FileDeleted",
    "FileEntry",
    "FileWritten",
    "HostInfo",
    "Limits",
    "MemoryInfo",
    "NetworkSpec",
    "ObservedLimits",
    "SessionInfo",
    "SessionList",
    "TemplateInfo",
    "Usage",
    "validate_name",
]

# A DNS-1123 label: what Kubernetes accepts as a name segment, and a safe host name and path.
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
_NAME = re.compile(NAME_PATTERN)
# A container below this cannot even start a shell under LXC; refuse it up front.
MIN_MEMORY_BYTES = 16 * 2**20
# Below these an ext4 image has no room for its own metadata; no shell fits either.
MIN_DISK_BYTES = 32 * 2**20
MIN_INODES = 1024
# Label keys as Kubernetes writes them (optional DNS prefix, then a name); values up to 63.
_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


def validate_name(name: str) -> str:
    """Accept a DNS-1123 label of at most 63 characters, or raise ValueError saying why."""
    if not name:
        raise ValueError("a name must not be empty")
    if len(name) > 63:
        raise ValueError(f"a name has at most 63 characters, {name[:20]!r}... has {len(name)}")
    if _NAME.match(name) is None:
        raise ValueError(
            f"{name!r} is not a DNS-1123 label: lower-case letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return name


def _check_labels(labels: dict[str, str]) -> dict[str, str]:
    if len(labels) > 64:
        raise ValueError(f"at most 64 labels, got {len(labels)}")
    for key, value in labels.items():
        if len(key) > 253 + 1 + 63 or _LABEL_KEY.match(key) is None:
            raise ValueError(f"label key {key!r} is not a valid label key")
        if _LABEL_VALUE.match(value) is None:
            raise ValueError(
                f"label {key!r}: value {value!r} is not a valid label value "
                "(at most 63 letters, digits, '-', '_' or '.')"
            )
    return labels


ByteQuantity = Annotated[
    int,
    BeforeValidator(parse_bytes),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": QUANTITY_PATTERN},
            ]
        },
        mode="validation",
    ),
]
Name = Annotated[str, AfterValidator(validate_name)]
Labels = Annotated[dict[str, str], AfterValidator(_check_labels)]


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


DesiredState = Literal["running", "stopped"]
ContainerState = Literal[
    "running", "stopped", "starting", "stopping", "aborting", "freezing", "frozen", "thawed"
]


class Limits(_Model):
    """Resource limits, applied through cgroups and rlimits. All of them can change live."""

    cpus: int = Field(
        1,
        ge=1,
        le=4096,
        description="Number of cores the container is pinned to (cpuset), taken from the "
        "host's shared cores; at most the number of shared cores.",
    )
    cpu_quota: float | None = Field(
        None,
        gt=0,
        le=4096,
        description="Optional hard cap on CPU time, in cores (0.5 = half of one core), "
        "enforced by the CFS quota. None leaves only the cpuset.",
    )
    burst_cpu_seconds: float = Field(
        0,
        ge=0,
        le=86400,
        description="CPU seconds the container may use on all shared cores before it is "
        "narrowed to its own `cpus`. 0 pins it from the start.",
    )
    memory: ByteQuantity = Field(
        256 * 2**20,
        ge=MIN_MEMORY_BYTES,
        description="Memory limit in bytes or as a quantity ('256Mi'); at least 16Mi.",
    )
    memory_swap: ByteQuantity | None = Field(
        None,
        ge=MIN_MEMORY_BYTES,
        description="Limit on memory plus swap, at least `memory`. None means equal to "
        "`memory`: no swap.",
    )
    pids: int = Field(
        256, ge=8, le=4194304, description="Maximum number of tasks (the fork-bomb cap)."
    )
    nofile: int = Field(
        1024, ge=64, le=1048576, description="RLIMIT_NOFILE (soft and hard) of every process."
    )
    nproc: int = Field(
        512, ge=8, le=4194304, description="RLIMIT_NPROC (soft and hard) of every process."
    )
    disk: ByteQuantity | None = Field(
        None,
        ge=MIN_DISK_BYTES,
        le=2**44,
        description="Limit on the bytes of the container's writable layer, in bytes or as a "
        "quantity ('1Gi'); at least 32Mi. None: the host's default (see GET /v1/host). Set "
        "when the container is made: it cannot change in place.",
    )
    inodes: int | None = Field(
        None,
        ge=MIN_INODES,
        le=2**32 - 1,
        description="Limit on the files (inodes) of the writable layer; at least 1024. None: "
        "the host's default. Set when the container is made: it cannot change in place.",
    )

    @model_validator(mode="after")
    def _swap_covers_memory(self) -> Limits:
        if self.memory_swap is not None and self.memory_swap < self.memory:
            raise ValueError(
                f"memorySwap ({self.memory_swap}) must be at least memory ({self.memory})"
            )
        return self

    @property
    def memory_swap_bytes(self) -> int:
        """memory+swap in bytes, with the no-swap default filled in."""
        return self.memory if self.memory_swap is None else self.memory_swap


class NetworkSpec(_Model):
    """Network of the container. None by default: only a loopback interface."""

    mode: Literal["none", "bridge"] = Field(
        "none",
        description="'none': loopback only. 'bridge': one veth interface attached to `bridge`.",
    )
    bridge: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$",
        description="Host bridge for mode 'bridge' (it must exist on the host).",
    )

    @model_validator(mode="after")
    def _bridge_named(self) -> NetworkSpec:
        if self.mode == "bridge" and not self.bridge:
            raise ValueError("network mode 'bridge' needs the name of a host bridge")
        if self.mode == "none" and self.bridge:
            raise ValueError("a bridge is only used with network mode 'bridge'")
        return self


class ContainerSpec(_Model):
    """The desired state of one container. PUT it again and again: it converges once."""

    template: Name = Field(description="Name of a template on this host, e.g. 'busybox'.")
    state: DesiredState = Field("running", description="Whether the container should run.")
    limits: Limits = Field(default_factory=Limits, description="Resource limits.")
    labels: Labels = Field(
        default_factory=dict,
        description="Free-form labels kept with the container (the operator stores the "
        "Sandbox UID here); GET /v1/containers?label=key=value filters on them.",
    )
    network: NetworkSpec = Field(default_factory=NetworkSpec, description="Network.")


class ObservedLimits(_Model):
    """Limits in force, read back from the cgroup files and /proc, not from the request."""

    cpuset: str = Field(description="cpuset.cpus of the container's cgroup, e.g. '2-3'.")
    cpus: int = Field(description="Number of cores in `cpuset`.")
    cpu_quota: float | None = Field(description="CFS quota in cores; None when uncapped.")
    memory: int | None = Field(description="Memory limit in bytes; None when unlimited.")
    memory_swap: int | None = Field(
        description="Memory+swap limit in bytes; None when unlimited or not accounted."
    )
    pids: int | None = Field(description="pids.max; None when unlimited.")
    nofile: int | None = Field(description="Hard RLIMIT_NOFILE of the container's init.")
    nproc: int | None = Field(description="Hard RLIMIT_NPROC of the container's init.")


class Usage(_Model):
    """What the container has used, from its cgroup counters."""

    cpu_seconds: float = Field(description="CPU time used since start, in seconds.")
    memory_bytes: int = Field(description="Memory in use now.")
    memory_peak_bytes: int | None = Field(description="Highest memory use recorded.")
    pids: int = Field(description="Tasks running now.")


class DiskStatus(_Model):
    """The container's writable layer: its limits and use, as its backend counts them."""

    backend: str = Field(description="The mechanism limiting it: ext4-image, project-quota, none.")
    limit_bytes: int | None = Field(
        description="Bytes it may hold (an ext4 image: its filesystem's size, a little below "
        "the quota for the filesystem's own metadata); None when unlimited."
    )
    used_bytes: int | None = Field(description="Bytes it holds now; None when not counted.")
    limit_inodes: int | None = Field(description="Inodes it may hold; None when unlimited.")
    used_inodes: int | None = Field(
        description="Inodes it holds now (with the layer's own few directories)."
    )


class BurstStatus(_Model):
    """The start-up burst: all shared cores until `cpuSeconds` of CPU time are used."""

    active: bool = Field(description="True while the container still runs on all shared cores.")
    cpu_seconds: float = Field(description="CPU seconds the burst lasts.")
    assigned_cpuset: str = Field(description="The cpuset the container narrows to afterwards.")


class ContainerStatus(_Model):
    """The observed state of one container."""

    name: str = Field(description="Container name.")
    state: ContainerState = Field(description="State as LXC reports it.")
    pid: int | None = Field(description="Host PID of the container's init while running.")
    template: str = Field(description="Template the container was cloned from.")
    labels: dict[str, str] = Field(description="Labels stored with the container.")
    spec_hash: str = Field(description="Hash of the last spec the container converged to.")
    spec: ContainerSpec = Field(description="The last spec the container converged to.")
    created_at: datetime = Field(description="When the container was cloned.")
    started_at: datetime | None = Field(description="When its init started (from /proc).")
    limits: ObservedLimits | None = Field(description="Limits in force; None when stopped.")
    burst: BurstStatus | None = Field(description="Burst progress, when a burst was asked for.")
    usage: Usage | None = Field(description="Resource usage; None when stopped.")
    disk: DiskStatus | None = Field(
        None, description="The writable layer's limits and use (also while stopped)."
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="Parts of the spec not in force yet, and why (e.g. a raised rlimit that "
        "this host can only apply at the next start).",
    )


class ContainerList(_Model):
    """A list of observed containers."""

    items: list[ContainerStatus] = Field(description="The containers, sorted by name.")


class CpuInfo(_Model):
    """How the host's cores are split between the host and the containers."""

    total: int = Field(description="Cores the agent may use (its cpuset).")
    reserved: list[int] = Field(description="Cores kept for the host; no container gets them.")
    shared: list[int] = Field(description="Cores handed out to containers.")
    allocation: dict[str, int] = Field(
        description="For each shared core, how many containers are pinned to it."
    )


class MemoryInfo(_Model):
    """Host memory, from /proc/meminfo."""

    total_bytes: int = Field(description="MemTotal.")
    available_bytes: int = Field(description="MemAvailable.")


class DiskInfo(_Model):
    """The filesystem of the data directory, and what containers may take of it."""

    path: str = Field(description="The data directory.")
    backend: str = Field(description="How containers' writable layers are limited.")
    total_bytes: int = Field(description="Size of its filesystem.")
    free_bytes: int = Field(description="Free bytes (for an unprivileged writer).")
    total_inodes: int = Field(description="Inodes of its filesystem.")
    free_inodes: int = Field(description="Free inodes.")
    reserve_bytes: int = Field(description="New containers are refused below this free space.")
    reserve_inodes: int = Field(description="New containers are refused below these inodes.")
    default_bytes: int = Field(description="Disk limit of a container whose spec names none.")
    default_inodes: int = Field(description="Inode limit of a container whose spec names none.")
    allocated_bytes: int = Field(description="Sum of the disk limits of the containers here.")
    below_reserve: bool = Field(description="True while new containers are refused.")


class TemplateInfo(_Model):
    """A read-only base root filesystem that containers are overlay clones of."""

    name: str = Field(description="Template name.")
    built_at: datetime = Field(description="When it was built.")
    size_bytes: int = Field(description="Size of the root filesystem.")
    init: list[str] = Field(description="Init command its containers run as PID 1.")


class QuarantinedContainer(_Model):
    """A container the agent cannot manage: its record is unreadable."""

    name: str = Field(description="Container name (its directory).")
    reason: str = Field(description="What is wrong with its record.")


class HostInfo(_Model):
    """What the host offers and how busy it is."""

    version: str = Field(description="Agent version.")
    cgroup_version: Literal[1, 2] = Field(description="cgroup version the limits go through.")
    apparmor: bool = Field(description="Whether containers are confined by AppArmor.")
    cpus: CpuInfo
    memory: MemoryInfo
    disk: DiskInfo | None = Field(None, description="The data directory's disk.")
    templates: list[TemplateInfo] = Field(description="Templates present on the host.")
    containers: int = Field(description="Number of containers the agent manages.")
    running: int = Field(description="How many of them run.")
    load: tuple[float, float, float] = Field(description="1, 5 and 15 minute load averages.")
    quarantined: list[QuarantinedContainer] = Field(
        default_factory=list,
        description="Containers whose record was corrupt or truncated at start: stopped, "
        "left as found for inspection, refused (409 ContainerQuarantined) but to DELETE.",
    )


class ExecRequest(_Model):
    """A command to run inside a running container. argv is never given to a shell."""

    argv: list[str] = Field(min_length=1, max_length=4096, description="Program and arguments.")
    env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment (PATH, HOME and TERM are preset)."
    )
    stdin: str | None = Field(None, max_length=16 * 2**20, description="Text fed to stdin.")
    timeout_seconds: float = Field(
        30, gt=0, le=3600, description="Kill the command after this long."
    )
    max_output_bytes: int = Field(
        2**20, ge=1, le=64 * 2**20, description="Cap on each of stdout and stderr."
    )

    @model_validator(mode="after")
    def _argv_sane(self) -> ExecRequest:
        if not self.argv[0]:
            raise ValueError("argv[0] must name a program")
        if any("\x00" in arg for arg in self.argv):
            raise ValueError("argv must not contain NUL bytes")
        for key, value in self.env.items():
            if not key or "=" in key or "\x00" in key:
                raise ValueError(f"environment name {key!r} is not valid")
            if "\x00" in value:
                raise ValueError(f"environment variable {key} must not contain NUL bytes")
        return self


class ExecResult(_Model):
    """The outcome of an exec."""

    exit_code: int | None = Field(description="Exit status; None when killed by the timeout.")
    stdout: str = Field(description="Standard output (UTF-8, invalid bytes replaced).")
    stderr: str = Field(description="Standard error (UTF-8, invalid bytes replaced).")
    stdout_truncated: bool = Field(description="True when stdout hit maxOutputBytes.")
    stderr_truncated: bool = Field(description="True when stderr hit maxOutputBytes.")
    timed_out: bool = Field(description="True when the timeout killed the command.")
    duration_seconds: float = Field(description="Wall time the command ran.")


class SessionInfo(_Model):
    """A terminal session: a command on a terminal of its own, which outlives its connection."""

    id: str = Field(description="Session id, chosen by the client or by the agent.")
    command: list[str] = Field(description="The command the session runs.")
    created_at: datetime = Field(description="When it started.")
    attached: bool = Field(description="Whether a client is attached now.")
    exited: bool = Field(description="Whether the command has exited.")
    exit_code: int | None = Field(description="Its exit code, once exited (128 + N: signal N).")


class SessionList(_Model):
    """The terminal sessions of one container."""

    items: list[SessionInfo] = Field(description="The sessions, oldest first.")


FileType = Literal["file", "directory", "symlink", "other"]


class FileEntry(_Model):
    """One entry of a directory inside a container (symbolic links are not followed)."""

    name: str = Field(description="Name within the directory.")
    type: FileType = Field(description="What it is; 'other' for devices, FIFOs and sockets.")
    size: int = Field(description="Size in bytes.")
    mode: str = Field(description="Permission bits in octal, e.g. '0644'.")
    modified_at: datetime = Field(description="Last modification.")


class DirectoryListing(_Model):
    """A directory inside a container."""

    path: str = Field(description="The directory, as asked for.")
    items: list[FileEntry] = Field(description="Its entries, sorted by name.")
    truncated: bool = Field(
        False, description="True when the directory holds more entries than the agent lists."
    )


class FileWritten(_Model):
    """A file written inside a container (atomically, owned by the container's root)."""

    path: str = Field(description="The file written.")
    size: int = Field(description="Bytes written.")
    mode: str = Field(description="Permission bits in octal, e.g. '0644'.")


class FileDeleted(_Model):
    """A file removed inside a container."""

    path: str = Field(description="The file removed.")
    deleted: bool = Field(description="Always true: a missing file is a 404.")


class ErrorBody(_Model):
    """Every 4xx and 5xx answer carries this body."""

    reason: str = Field(description="A machine-readable reason, e.g. 'InvalidSpec'.")
    message: str = Field(description="What went wrong, for people.")
    details: list[dict[str, Any]] | None = Field(
        None, description="Field errors, when the request body was invalid."
    )

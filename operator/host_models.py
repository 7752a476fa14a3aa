"""The SandboxHost API type (tux.io/v1alpha1): an LXC host running the node agent.

Part of the one source of truth for the CRDs (see `tuxio.operator.models`).
"""

from __future__ import annotations

from pydantic import ConfigDict, Field

from .models import EMPTY_DEFAULT, ApiModel, Conditions

__all__ = [
    "AgentCredentials",
    "HostAllocation",
    "HostCapacity",
    "HostLocation",
    "SandboxHostSpec",
    "SandboxHostStatus",
]


class AgentCredentials(ApiModel):
    """Where the agent's bearer token (and optionally its CA) are kept."""

    name: str = Field(max_length=253, description="Name of the Secret.")
    namespace: str = Field(max_length=63, description="Namespace of the Secret.")
    token_key: str = Field("token", description="Key of the bearer token in the Secret.")
    ca_key: str | None = Field(
        None, description="Key of a PEM CA bundle to verify the agent's TLS certificate."
    )


class HostLocation(ApiModel):
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


class SandboxHostSpec(ApiModel):
    """An LXC host running the tuxio node agent."""

    endpoint: str = Field(
        pattern=r"^https?://[^\s/]+(:[0-9]+)?/?$",
        description="Base URL of the agent, e.g. https://host1.example.org:7443.",
    )
    credentials_secret_ref: AgentCredentials = Field(description="The agent's token.")
    location: HostLocation = Field(
        default_factory=HostLocation,
        description="Where the host is, for placement near visitors.",
        json_schema_extra=EMPTY_DEFAULT,
    )
    unschedulable: bool = Field(False, description="True: no new sandboxes are placed here.")
    max_sandboxes: int | None = Field(
        None, ge=0, description="Cap on sandboxes on this host; unset means no cap."
    )


class HostCapacity(ApiModel):
    """What the host offers, as its agent reports it."""

    cpus: int = Field(description="Cores the agent may use.")
    shared_cpus: int = Field(description="Cores handed out to sandboxes.")
    memory_bytes: int = Field(description="Host memory.")
    memory_available_bytes: int = Field(description="Memory available now.")
    disk_bytes: int | None = Field(
        None,
        description="Disk the data directory can give sandboxes: its filesystem's size less "
        "the agent's reserve. The scheduler places disk limits up to it.",
    )
    disk_free_bytes: int | None = Field(None, description="Free bytes of the data directory.")
    disk_inodes: int | None = Field(None, description="Inodes of the data directory's filesystem.")
    disk_free_inodes: int | None = Field(None, description="Free inodes of the data directory.")
    disk_default_bytes: int | None = Field(
        None, description="Disk limit of a sandbox that names none, on this host."
    )
    disk_below_reserve: bool | None = Field(
        None,
        description="True while free disk or inodes are below the agent's reserve: the agent "
        "refuses new sandboxes (DiskBelowReserve) and the scheduler places none here.",
    )
    disk_backend: str | None = Field(
        None, description="How sandboxes' disks are limited: ext4-image, project-quota, none."
    )


class HostAllocation(ApiModel):
    """What the scheduler has placed on the host."""

    sandboxes: int = Field(description="Sandboxes scheduled to this host.")
    memory_bytes: int = Field(description="Sum of their memory limits.")
    disk_bytes: int | None = Field(None, description="Sum of their disk limits.")
    containers: int = Field(description="Containers the agent reports.")
    running: int = Field(description="Of those, running.")


class SandboxHostStatus(ApiModel):
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

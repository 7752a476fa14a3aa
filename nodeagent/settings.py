"""The agent's settings: one object, from flags or TUXIO_AGENT_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["AgentSettings"]


class AgentSettings(BaseSettings):
    """Everything the agent can be told at start."""

    model_config = SettingsConfigDict(env_prefix="TUXIO_AGENT_", extra="forbid")

    listen: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(7443, ge=1, le=65535, description="TCP port.")
    token_file: Path = Field(
        Path("/etc/tuxio/agent-token"), description="File holding the bearer token."
    )
    tls_cert: Path | None = Field(None, description="PEM certificate; with tls_key, serve HTTPS.")
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert.")
    data_dir: Path = Field(
        Path("/var/lib/tuxio"), description="Holds templates/ and containers/ (the LXC path)."
    )
    reserved_cpus: int | None = Field(
        None, ge=0, description="Cores kept for the host; default 1 up to 4 cores, 2 above."
    )
    idmap_base: int = Field(100000, ge=1, description="First host id container root maps to.")
    idmap_size: int = Field(65536, ge=65536, description="How many ids are mapped.")
    burst_poll_seconds: float = Field(
        0.25, gt=0, description="How often bursting containers are checked."
    )
    stop_timeout_seconds: int = Field(
        5, ge=0, description="Grace before a stopping container is killed."
    )
    # Terminals and streams. LXC gives each container `lxc.pty.max = 64` ptys, and every
    # terminal session takes one of them: the cap keeps most for the container's own programs.
    sessions_per_container: int = Field(
        16,
        ge=1,
        le=63,
        description="Concurrent sessions (terminals and streaming execs) per container; below "
        "the container's 64 ptys (lxc.pty.max).",
    )
    sessions_per_agent: int = Field(2048, ge=1, description="Concurrent sessions on this host.")
    session_idle_seconds: float = Field(
        3600, gt=0, description="A session with no input or output this long is ended."
    )
    session_grace_seconds: float = Field(
        300, ge=0, description="How long a terminal waits for its client to come back."
    )
    session_hangup_seconds: float = Field(
        2, ge=0, description="Between the hang-up (SIGHUP) of a session and the SIGKILL."
    )
    session_buffer_bytes: int = Field(
        2 * 2**20,
        ge=64 * 2**10,
        description="Output a session buffers for its client; when full, the agent stops "
        "reading and the writer in the container blocks.",
    )
    session_replay_bytes: int = Field(
        64 * 2**10, ge=0, description="Recent output replayed to a client that attaches again."
    )
    output_budget_bytes: int = Field(
        256 * 2**20,
        ge=2**20,
        description="Output all commands together may hold unsent in the agent: sessions "
        "stop reading while it is spent, a one-shot exec that does not fit is refused (429).",
    )
    file_max_bytes: int = Field(
        64 * 2**20, ge=1, description="Largest file read or written through the files routes."
    )
    # Disks. The default limits apply to a container whose spec names none.
    disk_backend: Literal["ext4-image", "project-quota", "none"] = Field(
        "ext4-image",
        description="How each container's writable layer is limited: an ext4 image per "
        "container (any kernel), project quotas (XFS or ext4 with prjquota and a kernel with "
        "quota support), or none. See docs/disk.md.",
    )
    disk_default_bytes: int = Field(
        2**30, ge=32 * 2**20, description="Disk limit of a container whose spec names none."
    )
    disk_default_inodes: int = Field(
        65536, ge=1024, description="Inode limit of a container whose spec names none."
    )
    disk_reserve_bytes: int = Field(
        2 * 2**30,
        ge=0,
        description="New containers are refused while the data directory has less free space.",
    )
    disk_reserve_inodes: int = Field(
        100000,
        ge=0,
        description="New containers are refused while the data directory has fewer free inodes.",
    )
    metrics_listen: str = Field(
        "127.0.0.1", description="Address of the plain-HTTP /metrics listener (Prometheus)."
    )
    metrics_port: int = Field(
        9473, ge=0, le=65535, description="Port of the /metrics listener; 0 turns it off."
    )
    disk_usage_seconds: float = Field(
        60, gt=0, description="How often each container's writable layer is measured."
    )
    access_log: bool = Field(False, description="Log every request.")
    log_level: str = Field("info", description="Python log level.")

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        # LXC names a container's command socket after the LXC path string: a relative path
        # would address other sockets than lxc-start made, and the tools would disagree.
        return value.resolve()

    @model_validator(mode="after")
    def _replay_within_buffer(self) -> AgentSettings:
        if self.session_replay_bytes > self.session_buffer_bytes:
            raise ValueError("session_replay_bytes must not exceed session_buffer_bytes")
        return self

    @property
    def lxcpath(self) -> Path:
        return self.data_dir / "containers"

    @property
    def templates_dir(self) -> Path:
        return self.data_dir / "templates"

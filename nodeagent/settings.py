"""The agent's settings: one object, from flags or TUXIO_AGENT_* environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
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
    access_log: bool = Field(False, description="Log every request.")
    log_level: str = Field("info", description="Python log level.")

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        # LXC names a container's command socket after the LXC path string: a relative path
        # would address other sockets than lxc-start made, and the tools would disagree.
        return value.resolve()

    @property
    def lxcpath(self) -> Path:
        return self.data_dir / "containers"

    @property
    def templates_dir(self) -> Path:
        return self.data_dir / "templates"

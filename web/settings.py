"""tuxio-web's settings: one object, from TUXIO_WEB_* environment variables."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["WebSettings"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class WebSettings(BaseSettings):
    """Everything tuxio-web can be told at start."""

    model_config = SettingsConfigDict(env_prefix="TUXIO_WEB_", extra="ignore")

    # ----- the site ------------------------------------------------------------------------
    listen: str = Field("0.0.0.0", description="Address of the HTTP listener.")  # noqa: S104
    port: int = Field(8080, ge=1, le=65535, description="Its TCP port.")
    secret_file: Path | None = Field(
        None,
        description="File holding the key that signs the session cookies (any bytes, at least "
        "32). Unset: a random key per process (sessions do not survive a restart).",
    )
    secure_cookie: bool = Field(
        True, description="Mark the session cookie Secure (false only for plain-HTTP tests)."
    )
    trusted_proxies: Annotated[list[Network], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated networks (CIDR) of proxies whose X-Forwarded-For is "
        "believed, e.g. the Ingress controller's pods. Empty: the peer address is the visitor.",
    )

    # ----- the sandboxes ---------------------------------------------------------------------
    namespace: str = Field("tuxio-web", description="Namespace of the visitors' Sandboxes.")
    pool: str = Field("web", description="SandboxPool (in that namespace) they are claimed from.")
    ttl_seconds: int = Field(
        3600, ge=60, le=86_400, description="Every sandbox is deleted this long after creation."
    )
    grace_seconds: float = Field(
        60.0,
        ge=1,
        description="A sandbox whose last tab closed is deleted after this long, unless a tab "
        "of its session comes back.",
    )
    ready_timeout_seconds: float = Field(
        60.0, gt=0, description="How long a new sandbox may take to run."
    )
    token_seconds: int = Field(
        600, ge=60, le=3600, description="Lifetime of the visitor tokens handed to browsers."
    )
    gateway_url: str = Field(
        "wss://play.example.org",
        description="The gateway's visitor endpoint as browsers reach it (ws:// or wss://).",
    )
    delete_on_exit: bool = Field(
        False,
        description="Delete every visitor's sandbox when tuxio-web stops (false: the next "
        "process adopts them, and their grace period and TTL still apply).",
    )
    kubeconfig: Path | None = Field(
        None, description="Kubeconfig to use; unset: $KUBECONFIG or the in-cluster account."
    )

    # ----- a rush -------------------------------------------------------------------------------
    max_sandboxes: int = Field(
        200,
        ge=1,
        description="At most this many visitors' sandboxes at once, and never more than the "
        "hosts can hold (SandboxHost status).",
    )
    sandbox_memory_bytes: int = Field(
        256 * 1024 * 1024,
        ge=1,
        description="Memory one visitor's sandbox takes (its pool's limit): a host holds "
        "memoryBytes / this many, or its maxSandboxes if smaller.",
    )
    capacity_refresh_seconds: float = Field(
        5.0, gt=0, description="How often the hosts' capacity is read."
    )
    queue_length: int = Field(
        500, ge=0, description="Visitors kept waiting in line at most; more are told a time."
    )
    queue_ticket_seconds: float = Field(
        15.0,
        gt=0,
        description="A place in line is kept this long after the visitor's last poll.",
    )
    rate_per_minute: float = Field(
        10.0, gt=0, description="New sandboxes per client address per minute, on average."
    )
    rate_burst: int = Field(5, ge=1, description="New sandboxes one address may take at once.")
    log_level: str = Field("info", description="Python log level.")

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_networks(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("gateway_url")
    @classmethod
    def _websocket_url(cls, value: str) -> str:
        if not value.startswith(("ws://", "wss://")):
            raise ValueError("gateway_url must start with ws:// or wss://")
        return value.rstrip("/")

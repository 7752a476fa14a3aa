"""The gateway's settings: one object, from TUXIO_GATEWAY_* environment variables."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["GatewaySettings"]


class GatewaySettings(BaseSettings):
    """Everything the gateway can be told at start."""

    model_config = SettingsConfigDict(env_prefix="TUXIO_GATEWAY_", extra="ignore")

    # ----- the aggregated API (reached only by the Kubernetes API server) --------------------
    api_listen: str = Field("0.0.0.0", description="Address of the aggregated API's listener.")  # noqa: S104
    api_port: int = Field(8443, ge=1, le=65535, description="Its TCP port (HTTPS).")
    tls_cert_file: Path = Field(
        Path("/run/tuxio-gateway/tls/tls.crt"),
        description="Serving certificate (PEM) of the aggregated API; the APIService's caBundle "
        "must verify it for <service>.<namespace>.svc.",
    )
    tls_key_file: Path = Field(
        Path("/run/tuxio-gateway/tls/tls.key"), description="Its private key (PEM)."
    )

    # ----- the visitor endpoint (public) -----------------------------------------------------
    visitor_listen: str = Field("0.0.0.0", description="Address of the visitor listener.")  # noqa: S104
    visitor_port: int = Field(8444, ge=1, le=65535, description="Its TCP port.")
    visitor_tls: bool = Field(
        True, description="Serve the visitor endpoint over TLS (false: behind a TLS proxy)."
    )
    visitor_tls_cert_file: Path | None = Field(
        None, description="The visitor endpoint's certificate; default: tls_cert_file."
    )
    visitor_tls_key_file: Path | None = Field(
        None, description="Its private key; default: tls_key_file."
    )
    visitor_allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Origins (scheme://host[:port]) whose pages may open visitor connections; "
        "comma-separated in the environment. Empty: no browser page may.",
    )
    visitor_allow_missing_origin: bool = Field(
        False,
        description="Accept visitor requests without an Origin header (clients that are not "
        "browsers; every browser sends one on a WebSocket handshake).",
    )

    # ----- visitor tokens --------------------------------------------------------------------
    signing_key_secret: str = Field(
        "tuxio-gateway-signing-key", description="Secret holding the token signing keys."
    )
    signing_key_namespace: str = Field("tuxio-system", description="Its namespace.")
    token_issuer: str = Field("tuxio-gateway", description="The tokens' `iss` claim.")
    token_default_seconds: int = Field(600, ge=1, description="Lifetime when none is asked.")
    token_max_seconds: int = Field(3600, ge=1, description="Longest lifetime that may be asked.")
    signing_key_refresh_seconds: float = Field(
        1.0, ge=0, description="At most this often, a token of an unknown key re-reads the Secret."
    )

    # ----- agents ----------------------------------------------------------------------------
    agent_connect_timeout_seconds: float = Field(
        10.0, gt=0, description="Opening a connection to an agent (TCP, TLS and the handshake)."
    )
    agent_request_timeout_seconds: float = Field(
        300.0, gt=0, description="A files request to an agent, from start to last byte."
    )
    allow_plaintext_agents: bool = Field(
        False,
        description="Forward to agents at http:// endpoints on the loopback (127.0.0.0/8, "
        "::1, localhost): development only. An http:// agent elsewhere is always refused.",
    )
    credentials_cache_seconds: float = Field(
        60.0, ge=0, description="How long an agent's token and CA, read from its Secret, are kept."
    )
    max_message_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="Largest WebSocket message taken from either side."
    )

    # ----- the process -----------------------------------------------------------------------
    replica: str = Field(
        default_factory=socket.gethostname,
        description="This replica's name in logs (the pod's name in a Deployment).",
    )
    metrics_listen: str = Field("0.0.0.0", description="Address of the /metrics listener.")  # noqa: S104
    metrics_port: int = Field(
        9472, ge=0, le=65535, description="Port of the /metrics listener (Prometheus); 0: none."
    )
    log_level: str = Field("info", description="Python log level.")
    access_log: bool = Field(False, description="Log every request (never a token).")

    @field_validator("visitor_allowed_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip().rstrip("/") for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _lifetimes(self) -> GatewaySettings:
        if self.token_default_seconds > self.token_max_seconds:
            raise ValueError("token_default_seconds must not exceed token_max_seconds")
        return self

    @property
    def visitor_cert(self) -> Path:
        return self.visitor_tls_cert_file or self.tls_cert_file

    @property
    def visitor_key(self) -> Path:
        return self.visitor_tls_key_file or self.tls_key_file

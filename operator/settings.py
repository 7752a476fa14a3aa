"""The operator's settings: one object, from TUXIO_OPERATOR_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["OperatorSettings"]


class OperatorSettings(BaseSettings):
    """Timings and policies of the operator."""

    model_config = SettingsConfigDict(env_prefix="TUXIO_OPERATOR_", extra="ignore")

    probe_interval_seconds: float = Field(5.0, gt=0, description="How often agents are probed.")
    not_ready_after_seconds: float = Field(
        15.0, gt=0, description="A host whose agent has not answered this long turns NotReady."
    )
    lost_after_seconds: float = Field(
        60.0, gt=0, description="After NotReady, this much longer and its sandboxes turn Lost."
    )
    heartbeat_write_seconds: float = Field(
        30.0, gt=0, description="Write a host's heartbeat at least this often (else on change)."
    )
    usage_write_seconds: float = Field(
        30.0, gt=0, description="Write a sandbox's usage at most this often."
    )
    orphan_grace_seconds: float = Field(
        30.0, ge=0, description="A labelled container younger than this is never swept."
    )
    memory_overcommit: float = Field(
        2.0, gt=0, description="Memory limits placed on a host may add up to this times its memory."
    )
    agent_timeout_seconds: float = Field(30.0, gt=0, description="Timeout of one agent call.")
    allow_plaintext_loopback_agents: bool = Field(
        False,
        description="Talk to agents at http:// endpoints on the loopback (127.0.0.0/8, ::1, "
        "localhost): development only. Otherwise a host whose endpoint is not https:// is "
        "NotReady (InsecureEndpoint) and its token is never sent.",
    )
    retry_delay_seconds: float = Field(
        2.0, gt=0, description="First retry delay when an agent is unreachable (doubles, max 30s)."
    )
    unschedulable_retry_seconds: float = Field(
        5.0, gt=0, description="How soon a sandbox no host fits is tried again."
    )
    pool_fill_parallelism: int = Field(
        16, ge=1, description="Warm containers one pool makes at once (bounds the refill)."
    )
    pool_refill_delay_seconds: float = Field(
        0.25,
        ge=0,
        description="Refills wait until no claim came for this long: while claims keep "
        "coming, container starts would take the CPU they need (see pool_refill_floor).",
    )
    pool_refill_floor: float = Field(
        0.25,
        ge=0,
        le=1,
        description="Below this share of replicas ready, a pool refills at once, claims or "
        "not: a steady stream of claims cannot drain it.",
    )
    pool_status_interval_seconds: float = Field(
        0.5,
        gt=0,
        description="Pool status counts are written at most this often (conditions at once).",
    )
    admission_claim_seconds: float = Field(
        120.0,
        gt=0,
        description="A warm container claimed at admission is held this long for a Sandbox "
        "that may never be stored (a later admission step refused it); longer than the API "
        "server takes to answer a request.",
    )
    pool_refresh_seconds: float = Field(
        5.0, gt=0, description="How often a pool's inventory is re-read from the agents."
    )
    event_rate_per_second: float = Field(
        10.0,
        gt=0,
        description="Routine Events (a Sandbox Running, deleted, ...) are posted at most this "
        "often on average, as the kubelet limits its own; warnings always are.",
    )
    event_burst: int = Field(
        100, ge=1, description="Routine Events that may be posted at once before the rate holds."
    )
    geoip_database: Path | None = Field(
        None,
        description="A GeoIP2 or GeoLite2 City database (.mmdb) to place sandboxes near the "
        "visitor's spec.placement.clientIP; unset: placement by region and load only.",
    )
    distance_weight: float = Field(
        4.0,
        ge=0,
        description="Weight of nearness against load when placing: with 4.0, 1000 km count "
        "as much as 20% of a host's memory free, so a half-full host next door still beats "
        "an empty one across an ocean, and a (nearly) full one does not.",
    )

    ledger_url: str = Field(
        "sqlite:////var/lib/tuxio/ledger.sqlite3",
        description="The usage ledger's database (SQLAlchemy URL): a SQLite file by default, "
        "or PostgreSQL, e.g. postgresql+psycopg://tuxio@db.example/tuxio; migrated at start.",
    )

    # Claims at admission (operator/admission.py): off unless the API server can reach us.
    webhook_url: str | None = Field(
        None,
        description="Claim warm containers at admission, served at this https URL as the API "
        "server reaches it (an operator outside the cluster, e.g. https://127.0.0.1:9443).",
    )
    webhook_service: str | None = Field(
        None,
        description="Claim warm containers at admission, served behind this Service (an "
        "operator in the cluster); its namespace is webhook_service_namespace.",
    )
    webhook_service_namespace: str = Field(
        "tuxio-system", description="Namespace of webhook_service (the operator's own)."
    )
    webhook_service_port: int = Field(443, ge=1, le=65535, description="Port of that Service.")
    webhook_listen: str = Field("0.0.0.0", description="Address the webhook server binds.")  # noqa: S104
    webhook_port: int = Field(9443, ge=1, le=65535, description="Port the webhook server binds.")
    metrics_listen: str = Field("0.0.0.0", description="Address of the /metrics listener.")  # noqa: S104
    metrics_port: int = Field(
        9471, ge=0, le=65535, description="Port of the /metrics listener (Prometheus); 0: none."
    )
    webhook_cert_dir: Path | None = Field(
        None,
        description="Where the webhook's self-signed certificate is written at start "
        "(a fresh one each start); unset: a new temporary directory.",
    )
    webhook_client_ca: Path | None = Field(
        None,
        description="CA bundle the API server's client certificate for webhooks is verified "
        "against (its --admission-control-config-file names that certificate): a caller "
        "without a certificate from it is refused in the TLS handshake. Unset: any caller is "
        "answered, and the NetworkPolicy in manifests/ is what keeps others away.",
    )
    webhook_client_names: list[str] = Field(
        default_factory=list,
        description="Names (common name or DNS SAN) a client certificate must carry besides "
        "being from webhook_client_ca; empty: any certificate from that CA.",
    )
    webhook_timeout_seconds: int = Field(
        2,
        ge=1,
        le=30,
        description="How long the API server waits for a claim before storing the Sandbox "
        "without one (the operator then places it as any other).",
    )

    @property
    def claims_at_admission(self) -> bool:
        return bool(self.webhook_url or self.webhook_service)

    # Node registration (operator/nodes.py): for the agent deployed as a DaemonSet.
    node_hosts: bool = Field(
        False,
        description="Register a SandboxHost for each Node labelled tux.io/lxc-host=true, "
        "pointing at the agent on that node; remove it when the label or the Node goes.",
    )
    node_agent_scheme: Literal["https", "http"] = Field(
        "https", description="Scheme of the agents on nodes."
    )
    node_agent_port: int = Field(
        7443, ge=1, le=65535, description="Port of the agents on nodes (the DaemonSet's)."
    )
    node_credentials_secret: str = Field(
        "tuxio-agent",
        description="Prefix of the Secrets with each node agent's token and CA: the host of "
        "node N has its own Secret PREFIX-N, written when its agent's certificate is signed.",
    )
    node_credentials_namespace: str = Field(
        "tuxio-system", description="Namespace of that Secret (the operator's own)."
    )
    node_credentials_ca_key: str = Field(
        "ca.crt", description="Key of the agents' CA in those Secrets; empty: the system CAs."
    )
    # The signer of the agents' certificates (operator/agent_credentials.py), on with node
    # registration.
    agent_ca_secret: str = Field(
        "tuxio-agent-ca",
        description="Secret (in node_credentials_namespace) with the CA that signs the node "
        "agents' serving certificates: ca.crt (a bundle during a CA rotation) and ca.key. "
        "Only the operator reads it.",
    )
    agent_bootstrap_user: str = Field(
        "system:serviceaccount:tuxio-system:tuxio-agent-bootstrap",
        description="Who may ask for an agent certificate: the user of the agents' bootstrap "
        "(the ServiceAccount of the DaemonSet).",
    )
    agent_certificate_max_seconds: int = Field(
        30 * 24 * 3600,
        ge=600,
        description="Longest life of an agent certificate (a request asks for its own, up to "
        "this).",
    )

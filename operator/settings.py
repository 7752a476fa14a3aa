"""The operator's settings: one object, from TUXIO_OPERATOR_* environment variables."""

from __future__ import annotations

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
    retry_delay_seconds: float = Field(
        2.0, gt=0, description="First retry delay when an agent is unreachable (doubles, max 30s)."
    )
    unschedulable_retry_seconds: float = Field(
        5.0, gt=0, description="How soon a sandbox no host fits is tried again."
    )
    pool_fill_parallelism: int = Field(
        16, ge=1, description="Warm containers one pool makes at once (bounds the refill)."
    )
    pool_refresh_seconds: float = Field(
        5.0, gt=0, description="How often a pool's inventory is re-read from the agents."
    )

"""The SandboxPool API type (tux.io/v1alpha1): warm containers of one template and limits.

Part of the one source of truth for the CRDs (see `tuxio.operator.models`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from .models import DNS_LABEL, EMPTY_DEFAULT, ApiModel, Conditions, Resources

__all__ = ["PoolAutoscaling", "PoolPlacement", "SandboxPoolSpec", "SandboxPoolStatus"]


class PoolPlacement(ApiModel):
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


class PoolAutoscaling(ApiModel):
    """The pool sizes itself: `replicas` is set by the operator, through the scale subresource,
    between minReplicas and maxReplicas, from the recent claims."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.minReplicas <= self.maxReplicas",
                    "message": "minReplicas must not exceed maxReplicas",
                },
                {
                    "rule": "self.windowSeconds >= self.leadSeconds",
                    "message": "windowSeconds (where the claim rate is measured) must be at "
                    "least leadSeconds",
                },
            ]
        }
    )

    min_replicas: int = Field(
        0, ge=0, le=10000, description="Fewest warm containers kept, even idle (0 is allowed)."
    )
    max_replicas: int = Field(ge=0, le=10000, description="Most warm containers kept.")
    lead_seconds: int = Field(
        60,
        ge=0,
        le=3600,
        description="How far ahead of demand: keep warm what this many seconds of claims at "
        "the recent rate take.",
    )
    window_seconds: int = Field(
        300, ge=1, le=86400, description="The recent claim rate is measured over this window."
    )
    scale_down_after_seconds: int = Field(
        600,
        ge=0,
        le=86400,
        description="Shrink (towards minReplicas) only after this long without a claim.",
    )


class SandboxPoolSpec(ApiModel):
    """Warm containers of one template and set of limits, ready to be claimed."""

    replicas: int = Field(0, ge=0, le=10000, description="Warm containers to keep ready.")
    template: str = Field(
        pattern=DNS_LABEL, max_length=63, description="Template of the warm containers."
    )
    resources: Resources = Field(
        default_factory=Resources,
        description="Limits of the warm containers (a claiming Sandbox may change them).",
        json_schema_extra=EMPTY_DEFAULT,
    )
    placement: PoolPlacement = Field(
        default_factory=PoolPlacement,
        description="The hosts that keep them: regions to pin them to, spread over regions.",
        json_schema_extra=EMPTY_DEFAULT,
    )
    autoscaling: PoolAutoscaling | None = Field(
        None,
        description="Size the pool from its claims (replicas is then the operator's); unset: "
        "replicas as written (by hand, or by an HPA or KEDA through the scale subresource).",
    )


class SandboxPoolStatus(ApiModel):
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

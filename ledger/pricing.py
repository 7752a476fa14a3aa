"""Prices the figures are computed with: the seed's server and a public per-second price."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["E2B", "SEED_HOST", "HostCost", "PerSecondPrice"]


@dataclass(frozen=True)
class HostCost:
    """One LXC host: what it costs a year and what it has."""

    per_year: float  # US dollars
    cores: int
    memory_gib: float


@dataclass(frozen=True)
class PerSecondPrice:
    """A sandbox service's price by the second."""

    name: str
    per_vcpu_second: float
    per_gib_second: float


# tux.io's server: 32 GB for $500 a year (8 cores).
SEED_HOST = HostCost(per_year=500.0, cores=8, memory_gib=32.0)
# E2B's published price.
E2B = PerSecondPrice("E2B", per_vcpu_second=0.000014, per_gib_second=0.0000045)

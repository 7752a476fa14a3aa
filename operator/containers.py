"""What the agent is asked for: the container specs of Sandboxes and of warm containers. Pure."""

from __future__ import annotations

from tuxio.nodeagent.models import ContainerSpec, Limits
from tuxio.nodeagent.models import NetworkSpec as AgentNetwork

from .labels import MANAGED_BY, OPERATOR, POOL_SPEC, POOL_UID, SANDBOX_UID
from .models import Resources, SandboxSpec, bytes_of, cores_of
from .pool_models import SandboxPoolSpec

__all__ = ["container_name", "container_spec", "limits_of", "warm_spec"]


def container_name(uid: str) -> str:
    """The container of a cold-created sandbox: unique across namespaces, a DNS label."""
    return f"sbx-{uid}"


def limits_of(resources: Resources) -> Limits:
    """The agent's limits for a Sandbox's (or a pool's) resources."""
    return Limits(
        cpus=resources.cpus,
        burst_cpu_seconds=resources.burst_cpu_seconds,
        memory=bytes_of(resources.memory),
        memory_swap=None if resources.memory_swap is None else bytes_of(resources.memory_swap),
        pids=resources.pids,
        nofile=resources.nofile,
        nproc=resources.nproc,
        cpu_quota=None if resources.cpu_quota is None else cores_of(resources.cpu_quota),
        disk=None if resources.disk is None else bytes_of(resources.disk),
        inodes=resources.inodes,
    )


def container_spec(spec: SandboxSpec, template: str, uid: str) -> ContainerSpec:
    """What the agent is asked for."""
    return ContainerSpec(
        template=template,
        state="running" if spec.state == "Running" else "stopped",
        limits=limits_of(spec.resources),
        labels={SANDBOX_UID: uid, MANAGED_BY: OPERATOR},
        network=AgentNetwork(mode=spec.network.mode, bridge=spec.network.bridge),
    )


def warm_spec(pool_uid: str, spec: SandboxPoolSpec, spec_hash: str) -> ContainerSpec:
    """A warm container of a pool: the pool's template and limits, labelled as its own."""
    return ContainerSpec(
        template=spec.template,
        limits=limits_of(spec.resources),
        labels={POOL_UID: pool_uid, POOL_SPEC: spec_hash, MANAGED_BY: OPERATOR},
    )

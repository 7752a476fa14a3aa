"""The names tuxio writes on objects and containers: labels, annotations, the finalizer.

One place for them, so that the reconcilers that write a name and those that read it never
import each other for it.
"""

from __future__ import annotations

__all__ = [
    "ASSIGNMENT",
    "CREATED_BY",
    "FINALIZER",
    "KOPF_FINALIZER",
    "LXC_HOST_LABEL",
    "MANAGED_BY",
    "NODE_LABEL",
    "OPERATOR",
    "POOL_SPEC",
    "POOL_UID",
    "REGION_LABEL",
    "SANDBOX_UID",
]

# On containers (the agent's labels) -------------------------------------------------------
# Every container the operator makes carries MANAGED_BY=OPERATOR: the probe lists these.
MANAGED_BY = "tux.io/managed-by"
OPERATOR = "tuxio-operator"
# The Sandbox a container belongs to.
SANDBOX_UID = "tux.io/sandbox-uid"
# A warm container's pool, and the hash of the pool spec it was made from.
POOL_UID = "tux.io/pool-uid"
POOL_SPEC = "tux.io/pool-spec"

# On Sandboxes ------------------------------------------------------------------------------
# The placement decision, written to the Sandbox's metadata (with its finalizer, in one write)
# before the agent is told; copied into status with the first status write that has the
# agent's answer for this Sandbox (a failure before that leaves it here only).
ASSIGNMENT = "tux.io/assignment"
# Held by every Sandbox that may have a container, until the container is destroyed. Ours, not
# kopf's: kopf adds its finalizer in an event cycle of its own, before any handler runs, which
# costs every new Sandbox a serial write and a watch round trip. This one is written with the
# placement decision (or stored with the Sandbox by the claim webhook) instead, and is in place
# before the agent is asked for anything (kopf calls deletion handlers only under its own).
FINALIZER = "tux.io/container"
# kopf's own, named for us: only on objects with daemons or timers.
KOPF_FINALIZER = "kopf.tux.io/finalizer"

# Who asked for a Sandbox (web, kubectl, ci, ...), for the usage ledger: a label or an
# annotation of this name; without one, the field manager that created the object.
CREATED_BY = "tux.io/created-by"

# On Nodes and SandboxHosts -----------------------------------------------------------------
LXC_HOST_LABEL = "tux.io/lxc-host"
# On a SandboxHost: the node it was registered for (and so, that it is ours to change).
NODE_LABEL = "tux.io/node"
REGION_LABEL = "topology.kubernetes.io/region"

"""SandboxHosts for Kubernetes nodes: one for each Node labelled tux.io/lxc-host=true.

With the agent deployed as a DaemonSet on those nodes (manifests/base/nodeagent), every such
node runs an agent on its own address. The operator registers a SandboxHost named after the
node that points at it (the node's InternalIP and the agents' port, and the host's own
credentials Secret `<prefix>-<node>`, which tuxio.operator.agent_credentials fills), keeps it
in step with the node (a cordoned node is an unschedulable host; the node's region is the
host's), and deletes it when the label or the Node goes. Hosts registered by hand (without
the tux.io/node label) are never touched.

Off unless TUXIO_OPERATOR_NODE_HOSTS is set: tuxio.operator.node_handlers adds its handlers
to kopf only then, so an operator without it neither watches Nodes nor needs the right to.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .index import ClusterIndex
from .kube import Kube
from .labels import LXC_HOST_LABEL, MANAGED_BY, NODE_LABEL, OPERATOR, REGION_LABEL
from .models import GROUP, VERSION
from .records import HostRecord
from .settings import OperatorSettings

__all__ = [
    "NodeAgents",
    "NodeHosts",
    "differs",
    "host_for_node",
    "node_address",
    "node_names",
    "wants_host",
]

log = logging.getLogger(__name__)

FIELD_MANAGER = "tuxio-operator-nodes"


@dataclass(frozen=True)
class NodeAgents:
    """How the agents on nodes are reached: the same for every node."""

    scheme: str
    port: int
    secret_name: str
    secret_namespace: str
    ca_key: str | None

    @classmethod
    def of(cls, settings: OperatorSettings) -> NodeAgents:
        return cls(
            scheme=settings.node_agent_scheme,
            port=settings.node_agent_port,
            secret_name=settings.node_credentials_secret,
            secret_namespace=settings.node_credentials_namespace,
            ca_key=settings.node_credentials_ca_key or None,
        )


def node_names(node: Mapping[str, Any]) -> set[str]:
    """The Node's name and every address it reports: what its agent's certificate may name."""
    names = {str(node["metadata"]["name"])}
    for address in (node.get("status") or {}).get("addresses") or []:
        if address.get("address"):
            names.add(str(address["address"]))
    return names


def node_address(node: Mapping[str, Any]) -> str | None:
    """The node's first InternalIP, as the kubelet reports it; None before it has one."""
    for address in (node.get("status") or {}).get("addresses") or []:
        if address.get("type") == "InternalIP" and address.get("address"):
            return str(address["address"])
    return None


def _endpoint(scheme: str, address: str, port: int) -> str:
    try:
        bracketed = ipaddress.ip_address(address).version == 6
    except ValueError:
        bracketed = False
    return f"{scheme}://[{address}]:{port}" if bracketed else f"{scheme}://{address}:{port}"


def wants_host(node: Mapping[str, Any]) -> bool:
    """Whether a Node should have a SandboxHost: labelled, not being deleted, with an address."""
    meta = node.get("metadata") or {}
    return (
        (meta.get("labels") or {}).get(LXC_HOST_LABEL) == "true"
        and not meta.get("deletionTimestamp")
        and node_address(node) is not None
    )


def host_for_node(node: Mapping[str, Any], agents: NodeAgents) -> dict[str, Any] | None:
    """The SandboxHost a Node should have, or None (see `wants_host`).

    Pure. It holds only the fields the operator owns: server-side apply leaves the rest of the
    host (a location, maxSandboxes, other labels) to whoever set them.
    """
    address = node_address(node)
    if not wants_host(node) or address is None:
        return None
    meta = node["metadata"]
    labels = meta.get("labels") or {}
    credentials: dict[str, Any] = {
        "name": f"{agents.secret_name}-{meta['name']}",
        "namespace": agents.secret_namespace,
        "tokenKey": "token",
    }
    if agents.ca_key:
        credentials["caKey"] = agents.ca_key
    spec: dict[str, Any] = {
        "endpoint": _endpoint(agents.scheme, address, agents.port),
        "credentialsSecretRef": credentials,
        # A cordoned node takes no new pods; its host takes no new sandboxes.
        "unschedulable": bool((node.get("spec") or {}).get("unschedulable")),
    }
    region = labels.get(REGION_LABEL)
    if region:
        spec["location"] = {"region": region}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SandboxHost",
        "metadata": {
            "name": meta["name"],
            "labels": {MANAGED_BY: OPERATOR, NODE_LABEL: meta["name"]},
        },
        "spec": spec,
    }


def differs(desired: Mapping[str, Any], current: HostRecord | None) -> bool:
    """Whether `current` lacks any field of `desired` (so it must be applied). Pure."""
    if current is None:
        return True
    spec, ref = desired["spec"], desired["spec"]["credentialsSecretRef"]
    have = current.spec
    return (
        have.endpoint != spec["endpoint"]
        or have.credentials_secret_ref.name != ref["name"]
        or have.credentials_secret_ref.namespace != ref["namespace"]
        or have.credentials_secret_ref.token_key != ref["tokenKey"]
        or have.credentials_secret_ref.ca_key != ref.get("caKey")
        or have.unschedulable != spec["unschedulable"]
        or have.location.region != (spec.get("location") or {}).get("region")
        or any(current.view.labels.get(k) != v for k, v in desired["metadata"]["labels"].items())
    )


def _registered_for(record: HostRecord | None, node: str) -> bool:
    return record is not None and record.view.labels.get(NODE_LABEL) == node


class NodeHosts:
    """Keeps a SandboxHost for every Node that should have one (see the module)."""

    def __init__(self, api: Kube, index: ClusterIndex, agents: NodeAgents) -> None:
        self.api = api
        self.index = index
        self.agents = agents
        # The SandboxHost each Node should have (None: none), fed with every Node event.
        self._wanted: dict[str, dict[str, Any] | None] = {}
        # The names and addresses of each Node that should have a host (for its agent's
        # certificate).
        self._names: dict[str, set[str]] = {}

    def names_of(self, node: str) -> set[str] | None:
        """The names and addresses of an LXC host's Node; None if it is not one."""
        return self._names.get(node) if self._wanted.get(node) is not None else None

    def want(self, node: str, body: Mapping[str, Any] | None) -> None:
        """Record what `node` (None: deleted) asks for."""
        if body is None:
            self._wanted.pop(node, None)
            self._names.pop(node, None)
        else:
            self._wanted[node] = host_for_node(body, self.agents)
            self._names[node] = node_names(body)

    async def node_changed(self, node: str, body: Mapping[str, Any] | None) -> None:
        """Any event of any Node (also the initial listing; None: the Node was deleted):
        bring its SandboxHost in line."""
        self.want(node, body)
        current = self.index.hosts.get(node)
        desired = self._wanted.get(node)
        if desired is None:
            if _registered_for(current, node):
                log.info("node %s is no LXC host (any more): deleting its SandboxHost", node)
                await self.api.delete_host(node)
            return
        if current is not None and not _registered_for(current, node):
            log.warning("SandboxHost %s was not registered for this node: left alone", node)
            return
        if differs(desired, current):
            log.info("registering SandboxHost %s at %s", node, desired["spec"]["endpoint"])
            await self.api.apply_host(desired, FIELD_MANAGER)

    async def host_changed(self, name: str, node: str, deleted: bool, deleting: bool) -> None:
        """Any event of a registered host (also the initial listing, so after a restart too):
        a host whose Node is gone or no LXC host any more is deleted; a host deleted for good
        while its Node still wants one is registered again.

        The second case is also how a Node deleted and made again under its name gets its
        host back: the new Node's events find the old host still being deleted, and leave it
        to this."""
        desired = self._wanted.get(node)
        if deleted:
            if desired is not None:
                log.info("SandboxHost of node %s was deleted: registering it again", node)
                await self.api.apply_host(desired, FIELD_MANAGER)
        elif desired is None and not deleting:
            log.info("node %s is gone or no LXC host: deleting its SandboxHost", node)
            await self.api.delete_host(name)

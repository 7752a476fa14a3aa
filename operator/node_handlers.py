"""kopf handlers for node registration (tuxio.operator.nodes) and the signer of the node
agents' certificates (tuxio.operator.agent_credentials), added only when it is on.

Off unless TUXIO_OPERATOR_NODE_HOSTS is set: `register` adds the handlers to kopf only then,
so an operator without it neither watches Nodes nor needs the right to.
"""

from __future__ import annotations

from typing import Any

import kopf

from tuxio.common.sealing import SIGNER_NAME

from .controllers import Controllers
from .labels import NODE_LABEL
from .models import GROUP, VERSION
from .settings import OperatorSettings

__all__ = ["register"]


async def node_index(name: str, body: kopf.Body, memo: Any, **_: Any) -> dict[str, None]:
    """What each Node asks for, recorded before any handler runs (so after a restart a host
    is never deleted for a Node not listed yet)."""
    controllers: Controllers = memo.controllers
    controllers.nodes.want(name, body)
    return {name: None}


async def node_changed(type: str | None, name: str, body: kopf.Body, memo: Any, **_: Any) -> None:
    """Any event of any Node (also the initial listing): bring its SandboxHost in line."""
    controllers: Controllers = memo.controllers
    await controllers.nodes.node_changed(name, None if type == "DELETED" else body)


async def node_host_event(
    type: str | None, name: str, labels: kopf.Labels, meta: kopf.Meta, memo: Any, **_: Any
) -> None:
    """Any event of a registered host (also the initial listing, so after a restart too)."""
    controllers: Controllers = memo.controllers
    deleting = bool(meta.get("deletionTimestamp"))
    await controllers.nodes.host_changed(name, labels[NODE_LABEL], type == "DELETED", deleting)


async def agent_request_event(body: kopf.Body, memo: Any, **_: Any) -> None:
    """Any event of a certificate request of the agents' signer (also the initial listing, so
    a request made while the operator was down is signed when it starts)."""
    controllers: Controllers = memo.controllers
    await controllers.credentials.csr_changed(body)


def _ours(spec: kopf.Spec, **_: Any) -> bool:
    return spec.get("signerName") == SIGNER_NAME


def register(settings: OperatorSettings) -> bool:
    """Add the handlers above to kopf when node registration is on; whether it is."""
    if not settings.node_hosts:
        return False
    kopf.on.event("", "v1", "nodes")(node_changed)
    kopf.index("", "v1", "nodes")(node_index)
    # An event handler, not a timer: a timer that deletes its own object waits on itself.
    kopf.on.event(GROUP, VERSION, "sandboxhosts", labels={NODE_LABEL: kopf.PRESENT})(
        node_host_event
    )
    kopf.on.event("certificates.k8s.io", "v1", "certificatesigningrequests", when=_ours)(
        agent_request_event
    )
    return True

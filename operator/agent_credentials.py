"""The credentials of the agents on nodes: a serving certificate and a bearer token per host.

The operator is the signer of `tux.io/agent-serving` (tuxio.operator.agent_signing says what it
signs). For a request it may sign it approves it, makes the host a new token (keeping the one
before as `previous-token`, so a rotation never locks the operator out), writes both with the
CA's certificate into the host's own Secret `<prefix>-<node>` (the one its SandboxHost names),
puts the token on the request sealed to the request's key, and issues the certificate. A
request it must not sign is denied with the reason. The CA's key stays in the operator's
Secret (`tuxio-agent-ca`), which no agent mounts or may read.

Every step is idempotent: a request seen again (the operator restarted midway, a watch
replayed) ends the same way, with the same token (the Secret records which request made it).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
from collections.abc import Callable, Mapping
from typing import Any

from tuxio.common.sealing import seal

from .agent_signing import (
    SEALED_TOKEN_ANNOTATION,
    AgentRequest,
    Refused,
    issue,
    load_ca,
    review,
    state_of,
)
from .agents import PREVIOUS_TOKEN_KEY
from .backoff import Backoff
from .kube import ApiError, Kube
from .labels import MANAGED_BY, NODE_LABEL, OPERATOR

__all__ = ["CSR_ANNOTATION", "AgentCredentialsIssuer", "host_secret_name"]

log = logging.getLogger(__name__)

# On a host's Secret: the request its token was made for.
CSR_ANNOTATION = "tux.io/certificate-signing-request"


def host_secret_name(prefix: str, node: str) -> str:
    """The Secret with the token of the host of `node`."""
    return f"{prefix}-{node}"


def _decoded(secret: Mapping[str, Any] | None) -> dict[str, str]:
    data = (secret or {}).get("data") or {}
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


class AgentCredentialsIssuer:
    """Signs the agents' requests (see the module)."""

    def __init__(
        self,
        api: Kube,
        node_names: Callable[[str], set[str] | None],
        *,
        namespace: str,
        secret_prefix: str,
        ca_secret: str,
        requester: str,
        max_seconds: int,
        backoff: Backoff | None = None,
    ) -> None:
        self.api = api
        self.node_names = node_names
        self.namespace = namespace
        self.secret_prefix = secret_prefix
        self.ca_secret = ca_secret
        self.requester = requester
        self.max_seconds = max_seconds
        self.backoff = backoff or Backoff(first=1.0, cap=15.0)

    async def csr_changed(self, csr: Mapping[str, Any], attempts: int = 8) -> None:
        """Any event of a request of our signer: take it as far as it goes, retrying what an
        API error stopped (kopf does not retry event handlers)."""
        name = csr["metadata"]["name"]
        for failures in range(attempts):
            try:
                # Read afresh: the event's body may predate this operator's own last write
                # (a certificate is written once; a second write is refused).
                await self._settle(await self.api.read_csr(name))
                return
            except (ApiError, ValueError) as exc:
                # A conflict (read again), the API server away, the CA Secret not made yet.
                log.warning("request %s: %s; trying again", name, exc)
                await asyncio.sleep(self.backoff.delay(failures))
        log.error("request %s: gave up after %d attempts", name, attempts)

    async def _settle(self, csr: dict[str, Any]) -> None:
        state = state_of(csr)
        if state in ("Issued", "Denied", "Failed"):
            return
        name = csr["metadata"]["name"]
        try:
            request = review(
                csr,
                requester=self.requester,
                node_names=self.node_names,
                max_seconds=self.max_seconds,
            )
        except Refused as exc:
            if state == "Pending":
                log.warning("request %s denied: %s", name, exc)
                await self.api.decide_csr(csr, False, "NotAnAgentOfThisNode", str(exc))
            return
        if state == "Pending":
            csr = await self.api.decide_csr(
                csr, True, "AgentOfThisNode", f"an agent's request for node {request.node}"
            )
        ca_data = _decoded(await self.api.read_secret_object(self.namespace, self.ca_secret))
        if "ca.crt" not in ca_data or "ca.key" not in ca_data:
            raise ValueError(
                f"Secret {self.namespace}/{self.ca_secret} lacks ca.crt or ca.key "
                "(hack/create-agent-secrets.sh makes it)"
            )
        ca, ca_key, bundle = load_ca(ca_data["ca.crt"], ca_data["ca.key"])
        token = await self._token_for(request, bundle)
        sealed = seal(token.encode(), request.public_key)
        if (csr["metadata"].get("annotations") or {}).get(SEALED_TOKEN_ANNOTATION) != sealed:
            csr = await self.api.annotate_csr(name, {SEALED_TOKEN_ANNOTATION: sealed})
        await self.api.issue_csr(csr, issue(request, ca, ca_key))
        log.info("request %s: certificate issued for node %s (%s)", name, request.node,
                 ", ".join(request.hosts))  # fmt: skip

    async def _token_for(self, request: AgentRequest, bundle: str) -> str:
        """The host's token for this request: made anew, unless this very request made the
        one in the host's Secret (then that one again)."""
        name = host_secret_name(self.secret_prefix, request.node)
        current = await self.api.read_secret_object(self.namespace, name)
        data = _decoded(current)
        annotations = ((current or {}).get("metadata") or {}).get("annotations") or {}
        if annotations.get(CSR_ANNOTATION) == request.name and data.get("token"):
            return data["token"]
        token = secrets.token_urlsafe(32)
        new = {"token": token, "ca.crt": bundle}
        if data.get("token"):
            new[PREVIOUS_TOKEN_KEY] = data["token"]
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": {MANAGED_BY: OPERATOR, NODE_LABEL: request.node},
                "annotations": {CSR_ANNOTATION: request.name},
            },
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in new.items()},
        }
        version = (current or {}).get("metadata", {}).get("resourceVersion")
        await self.api.write_secret(secret, version)
        return token

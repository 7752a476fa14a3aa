"""Certificates for agents, from their CertificateSigningRequests: what may be signed, and the
signing. Pure (no I/O): tuxio.operator.agent_credentials does the API calls.

An agent's bootstrap (`tuxio-agent credentials bootstrap`, the DaemonSet's init container and
its renewing sidecar) makes its own key, which never leaves the host, and asks with a
CertificateSigningRequest of signer `tux.io/agent-serving`, authenticated with a ServiceAccount
token bound to its pod. The API server records who asked in the request (`spec.username`,
`spec.extra`), including the node of that pod; only a request of the bootstrap account whose
node is an LXC host is signed, and only for that node's own name and addresses. So an agent on
one host can never get a certificate (or a token) for another.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tuxio.common.certificates import CaKey, serving_certificate
from tuxio.common.sealing import SEALED_TOKEN_ANNOTATION, SIGNER_NAME

__all__ = [
    "NODE_NAME_EXTRA",
    "SEALED_TOKEN_ANNOTATION",
    "SIGNER_NAME",
    "AgentRequest",
    "Refused",
    "issue",
    "load_ca",
    "review",
    "state_of",
]

# Where the API server records the node of the pod a ServiceAccount token is bound to.
NODE_NAME_EXTRA = "authentication.kubernetes.io/node-name"
_USAGES = {"digital signature", "key encipherment", "server auth"}


class Refused(ValueError):
    """The request must not be signed; the message says why (it becomes the denial's)."""


@dataclass(frozen=True)
class AgentRequest:
    """A request that may be signed: for `node`, naming `hosts`, valid `seconds`."""

    name: str
    node: str
    hosts: tuple[str, ...]
    public_key: ec.EllipticCurvePublicKey
    seconds: int


def state_of(csr: Mapping[str, Any]) -> str:
    """Issued, Denied, Failed, Approved (not yet issued) or Pending."""
    status = csr.get("status") or {}
    if status.get("certificate"):
        return "Issued"
    types = {c.get("type") for c in status.get("conditions") or [] if c.get("status") != "False"}
    for state in ("Denied", "Failed", "Approved"):
        if state in types:
            return state
    return "Pending"


def _names(request: x509.CertificateSigningRequest) -> list[str]:
    try:
        sans = request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise Refused("the request names no subject alternative names") from None
    others = [n for n in sans if not isinstance(n, x509.DNSName | x509.IPAddress)]
    if others:
        raise Refused("only DNS names and IP addresses may be asked for")
    return [str(n.value) for n in sans]


def review(
    csr: Mapping[str, Any],
    *,
    requester: str,
    node_names: Callable[[str], set[str] | None],
    max_seconds: int,
) -> AgentRequest:
    """The request, if it may be signed; Refused (with the reason) if not.

    `node_names(node)` gives the names and addresses of an LXC host's Node, None for a Node
    that is not one (or not known).
    """
    meta, spec = csr.get("metadata") or {}, csr.get("spec") or {}
    if spec.get("signerName") != SIGNER_NAME:
        raise Refused(f"signer {spec.get('signerName')} is not {SIGNER_NAME}")
    if spec.get("username") != requester:
        raise Refused(f"asked by {spec.get('username')}, not by {requester}")
    nodes = (spec.get("extra") or {}).get(NODE_NAME_EXTRA) or []
    if len(nodes) != 1:
        raise Refused("the requester's token is not bound to a pod on a node")
    node = str(nodes[0])
    allowed = node_names(node)
    if allowed is None:
        raise Refused(f"node {node} is no LXC host")
    try:
        request = x509.load_pem_x509_csr(base64.b64decode(spec.get("request") or ""))
    except ValueError as exc:
        raise Refused(f"spec.request is no PEM certificate request: {exc}") from None
    if not request.is_signature_valid:
        raise Refused("the request's signature is not valid")
    key = request.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise Refused("the key must be ECDSA P-256")
    hosts = _names(request)
    foreign = sorted(set(hosts) - allowed)
    if foreign:
        raise Refused(f"{', '.join(foreign)}: not a name or address of node {node}")
    usages = set(spec.get("usages") or [])
    if "server auth" not in usages or not usages <= _USAGES:
        raise Refused(f"usages must be server auth (and signing), not {sorted(usages)}")
    asked = spec.get("expirationSeconds")
    seconds = max_seconds if asked is None else min(int(asked), max_seconds)
    return AgentRequest(str(meta.get("name")), node, tuple(hosts), key, seconds)


def load_ca(cert_pem: str, key_pem: str) -> tuple[x509.Certificate, CaKey, str]:
    """The CA certificate that belongs to the key (the bundle may hold more during a CA
    rotation), the key, and the whole bundle (what agents' clients must trust)."""
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError("the CA key must be EC or RSA")
    mine = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for cert in x509.load_pem_x509_certificates(cert_pem.encode()):
        spki = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if spki == mine:
            return cert, key, cert_pem
    raise ValueError("no certificate in ca.crt belongs to ca.key")


def issue(
    request: AgentRequest, ca: x509.Certificate, ca_key: CaKey, now: datetime | None = None
) -> str:
    """A serving certificate (PEM) for the request, signed by the CA."""
    now = now or datetime.now(UTC)
    cert = serving_certificate(
        request.node, request.hosts, request.public_key, ca, ca_key, now,
        timedelta(seconds=request.seconds),
    )  # fmt: skip
    return cert.public_bytes(serialization.Encoding.PEM).decode()

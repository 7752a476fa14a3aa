"""The signer of the agents' certificates: what it signs, what it denies and why; the
certificate it issues; the token sealed to the request's key."""

from __future__ import annotations

import base64
import ipaddress
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tuxio.common.sealing import SealingError, seal, unseal
from tuxio.operator.agent_signing import (
    NODE_NAME_EXTRA,
    SIGNER_NAME,
    Refused,
    issue,
    load_ca,
    review,
    state_of,
)

BOOTSTRAP = "system:serviceaccount:tuxio-system:tuxio-agent-bootstrap"
NODES = {"node-a": {"node-a", "10.0.0.1"}, "node-b": {"node-b", "10.0.0.2"}}


def _csr_pem(key: Any, names: list[x509.GeneralName]) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "agent")])
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _request(
    *,
    key: Any = None,
    names: list[x509.GeneralName] | None = None,
    node: str | None = "node-a",
    username: str = BOOTSTRAP,
    signer: str = SIGNER_NAME,
    usages: tuple[str, ...] = ("digital signature", "server auth"),
    seconds: int | None = 3600,
) -> dict[str, Any]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    if names is None:
        names = [x509.DNSName("node-a"), x509.IPAddress(ipaddress.ip_address("10.0.0.1"))]
    spec: dict[str, Any] = {
        "signerName": signer,
        "username": username,
        "extra": {NODE_NAME_EXTRA: [node]} if node else {},
        "request": base64.b64encode(_csr_pem(key, names)).decode(),
        "usages": list(usages),
    }
    if seconds is not None:
        spec["expirationSeconds"] = seconds
    return {"metadata": {"name": "tuxio-agent-node-a-x"}, "spec": spec}


def _review(csr: dict[str, Any]) -> Any:
    return review(csr, requester=BOOTSTRAP, node_names=NODES.get, max_seconds=7200)


def test_a_request_of_the_bootstrap_for_its_own_node_is_signed() -> None:
    accepted = _review(_request())
    assert (accepted.node, sorted(accepted.hosts)) == ("node-a", ["10.0.0.1", "node-a"])
    assert accepted.seconds == 3600
    assert _review(_request(seconds=None)).seconds == 7200  # none asked: the longest
    assert _review(_request(seconds=10**6)).seconds == 7200  # capped


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"signer": "kubernetes.io/kubelet-serving"}, "is not tux.io/agent-serving"),
        ({"username": "system:serviceaccount:default:someone"}, "not by system:serviceaccount"),
        ({"node": None}, "not bound to a pod on a node"),
        ({"node": "control-plane"}, "node control-plane is no LXC host"),
        # An agent of node-a asking for node-b's address: the attack this signer is for.
        ({"names": [x509.IPAddress(ipaddress.ip_address("10.0.0.2"))]}, "10.0.0.2: not a name"),
        ({"names": [x509.DNSName("node-b")]}, "node-b: not a name or address of node node-a"),
        ({"names": []}, "no subject alternative names"),
        ({"names": [x509.RFC822Name("a@b.c")]}, "only DNS names and IP addresses"),
        ({"usages": ("digital signature", "client auth")}, "usages must be server auth"),
        ({"usages": ("server auth", "cert sign")}, "usages must be server auth"),
        ({"key": rsa.generate_private_key(65537, 2048)}, "must be ECDSA P-256"),
        ({"key": ec.generate_private_key(ec.SECP384R1())}, "must be ECDSA P-256"),
    ],
)
def test_what_is_refused(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(Refused, match=reason):
        _review(_request(**change))


def test_a_garbled_request_is_refused() -> None:
    csr = _request()
    csr["spec"]["request"] = base64.b64encode(b"not a request").decode()
    with pytest.raises(Refused, match="no PEM certificate request"):
        _review(csr)


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ({}, "Pending"),
        ({"conditions": [{"type": "Approved", "status": "True"}]}, "Approved"),
        ({"conditions": [{"type": "Denied", "status": "True"}]}, "Denied"),
        ({"conditions": [{"type": "Failed", "status": "True"}]}, "Failed"),
        ({"certificate": "eA==", "conditions": [{"type": "Approved"}]}, "Issued"),
    ],
)
def test_state_of(status: dict[str, Any], state: str) -> None:
    assert state_of({"status": status}) == state


def _ca(days: int = 3650) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tuxio-agent-ca")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


def test_the_certificate_issued_serves_the_nodes_names_under_the_ca() -> None:
    old_cert, _ = _ca()
    ca_cert, ca_key = _ca()
    # During a CA rotation the bundle holds both; the key's own certificate signs.
    ca, key, bundle = load_ca(old_cert + ca_cert, ca_key)
    assert bundle == old_cert + ca_cert
    now = datetime.now(UTC)
    cert = x509.load_pem_x509_certificate(issue(_review(_request()), ca, key, now).encode())
    cert.verify_directly_issued_by(ca)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"node-a"}
    assert [str(a) for a in sans.get_values_for_type(x509.IPAddress)] == ["10.0.0.1"]
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.not_valid_after_utc == (now + timedelta(seconds=3600)).replace(microsecond=0)


def test_a_ca_key_without_its_certificate_is_refused() -> None:
    cert, _ = _ca()
    _, other_key = _ca()
    with pytest.raises(ValueError, match=r"no certificate in ca\.crt belongs to ca\.key"):
        load_ca(cert, other_key)


def test_a_sealed_token_opens_only_with_the_requests_key() -> None:
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    sealed = seal(b"the-host-token", key.public_key())
    assert unseal(sealed, key) == b"the-host-token"
    assert seal(b"the-host-token", key.public_key()) != sealed  # a fresh ephemeral key each time
    with pytest.raises(SealingError):
        unseal(sealed, other)
    tampered = sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")
    with pytest.raises(SealingError):
        unseal(tampered, key)

"""The claim webhook answers the API server only: its client certificate is verified in the
TLS handshake, and its name checked; everyone else is refused before a claim is made. (That
the API server itself gets through is what every claim at admission in the other tests
proves: the session's operator runs with the same settings.)"""

from __future__ import annotations

import datetime
import ssl
import uuid
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.e2e.conftest import CLUSTER_DIR, WEBHOOK_CLIENT_NAME, Operator

PKI = CLUSTER_DIR / "pki"


def review() -> dict[str, object]:
    """A review of a dry-run creation: answered, and never a claim (nothing to undo)."""
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "operation": "CREATE",
            "dryRun": True,
            "resource": {"group": "tux.io", "version": "v1alpha1", "resource": "sandboxes"},
            "object": {"metadata": {"name": "x"}, "spec": {"poolRef": {"name": "p"}}},
        },
    }


def client_certificate(
    tmp: Path, common_name: str, ca: str = "webhook-client-ca"
) -> tuple[Path, Path]:
    """A client certificate named `common_name` signed by the cluster's CA `ca` (its key in
    the cluster's pki directory)."""
    ca_cert = x509.load_pem_x509_certificate((PKI / f"{ca}.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((PKI / f"{ca}.key").read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_file, key_file = tmp / f"{common_name}.crt", tmp / f"{common_name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def call(operator: Operator, cert: tuple[Path, Path] | None) -> httpx.Response:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the caller's side is not what is tested here
    if cert is not None:
        context.load_cert_chain(*cert)
    return httpx.post(
        f"https://127.0.0.1:{operator.webhook_port}/claim",
        json=review(),
        verify=context,
        timeout=30,
    )


def test_a_caller_without_a_certificate_is_refused_in_the_handshake(operator: Operator) -> None:
    with pytest.raises(httpx.TransportError):
        call(operator, None)


def test_a_certificate_from_another_ca_is_refused(operator: Operator, tmp_path: Path) -> None:
    # Signed by the cluster's CA, which every user's client certificate comes from.
    with pytest.raises(httpx.TransportError):
        call(operator, client_certificate(tmp_path, WEBHOOK_CLIENT_NAME, ca="ca"))


def test_another_name_from_the_right_ca_is_forbidden(operator: Operator, tmp_path: Path) -> None:
    response = call(operator, client_certificate(tmp_path, "someone-else"))
    assert response.status_code == 403, response.text
    assert "someone-else" in response.json()["message"]


def test_the_api_servers_certificate_is_answered(operator: Operator) -> None:
    response = call(operator, (PKI / "webhook-client.crt", PKI / "webhook-client.key"))
    assert response.status_code == 200, response.text
    answer = response.json()["response"]
    assert answer["allowed"] is True
    assert "patch" not in answer  # a dry run takes no container

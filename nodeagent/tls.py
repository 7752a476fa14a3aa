"""Agent certificates with the `cryptography` library: self-signed for development, or
issued by a CA (the DaemonSet's init container, for the node's own address)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from tuxio.common.certificates import san, serving_certificate

__all__ = ["make_self_signed", "make_signed"]


def _write_key(key_path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    key_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


def make_signed(
    cert_path: Path,
    key_path: Path,
    hosts: list[str],
    ca_cert_path: Path,
    ca_key_path: Path,
    days: int = 365,
) -> None:
    """Write an ECDSA P-256 key (0600) and a serving certificate for `hosts`, signed by the CA.

    A leaf with the identifiers strict verifiers ask for (key usage, serverAuth, subject and
    authority key ids), so clients that trust the CA accept it for any of `hosts`.
    """
    ca = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError(f"{ca_key_path}: an EC or RSA private key is needed")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = serving_certificate(
        hosts[0], hosts, key.public_key(), ca, ca_key, datetime.now(UTC), timedelta(days=days)
    )
    _write_key(key_path, key)
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_self_signed(cert_path: Path, key_path: Path, hosts: list[str], days: int = 365) -> None:
    """Write an ECDSA P-256 key (0600) and a certificate valid for `hosts`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([san(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    _write_key(key_path, key)
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

"""Serving certificates for agents: one leaf shape, whoever signs it (the agent's own CA tool or
the operator answering a CertificateSigningRequest)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CaKey", "san", "serving_certificate"]

CaKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def san(host: str) -> x509.GeneralName:
    """An IP address entry for an address, a DNS name otherwise."""
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def serving_certificate(
    common_name: str,
    hosts: Sequence[str],
    public_key: CertificateIssuerPublicKeyTypes,
    ca: x509.Certificate,
    ca_key: CaKey,
    now: datetime,
    lifetime: timedelta,
) -> x509.Certificate:
    """A leaf for `hosts` with the identifiers strict verifiers ask for (key usage, serverAuth,
    subject and authority key ids), valid from five minutes before `now` for `lifetime`, never
    past the CA."""
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(min(now + lifetime, ca.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName([san(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=False,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

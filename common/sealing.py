"""A secret sealed to one public key: how a host's token reaches only that host.

The operator, signing an agent's certificate request, also makes the host's bearer token; it
puts the token on the request object sealed to the request's own public key, so that only the
holder of the private key (the agent that asked, which never sent it anywhere) can read it.
ECIES over P-256: an ephemeral key, ECDH with the recipient's key, HKDF-SHA256, AES-256-GCM,
the ephemeral public key bound in as associated data.
"""

from __future__ import annotations

import base64
import os

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["SEALED_TOKEN_ANNOTATION", "SIGNER_NAME", "SealingError", "seal", "unseal"]

# The signer of the agents' serving certificates (the operator), and the annotation of a
# CertificateSigningRequest that carries the host's token, sealed to the request's key.
SIGNER_NAME = "tux.io/agent-serving"
SEALED_TOKEN_ANNOTATION = "tux.io/sealed-token"  # noqa: S105 (a name, not a token)

_INFO = b"tuxio sealed secret v1"
_POINT = 65  # an uncompressed P-256 point
_NONCE = 12


class SealingError(ValueError):
    """The sealed text is malformed, or not sealed to this key."""


def _key(shared: bytes, ephemeral: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=ephemeral, info=_INFO).derive(shared)


def seal(secret: bytes, recipient: ec.EllipticCurvePublicKey) -> str:
    """`secret` readable only with the private key of `recipient` (P-256), as URL-safe text."""
    if not isinstance(recipient.curve, ec.SECP256R1):
        raise SealingError("only P-256 keys can be sealed to")
    ephemeral = ec.generate_private_key(ec.SECP256R1())
    point = ephemeral.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    nonce = os.urandom(_NONCE)
    sealed = AESGCM(_key(ephemeral.exchange(ec.ECDH(), recipient), point)).encrypt(
        nonce, secret, point
    )
    return base64.urlsafe_b64encode(point + nonce + sealed).decode()


def unseal(text: str, key: ec.EllipticCurvePrivateKey) -> bytes:
    """The secret `seal` sealed to `key`'s public key."""
    try:
        raw = base64.urlsafe_b64decode(text.encode())
        point, nonce, sealed = raw[:_POINT], raw[_POINT : _POINT + _NONCE], raw[_POINT + _NONCE :]
        ephemeral = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        return AESGCM(_key(key.exchange(ec.ECDH(), ephemeral), point)).decrypt(nonce, sealed, point)
    except Exception as exc:  # any malformed or foreign text: one error
        raise SealingError(f"cannot unseal: {type(exc).__name__}") from None

"""`tuxio-agent credentials bootstrap`: the agent's certificate and token, asked for from the
cluster, with a key that never leaves the host.

The DaemonSet runs it as an init container (once, before the agent starts) and as a sidecar
(`--renew`: again when two thirds of the certificate's life are gone). It is the one part of
the agent that speaks to Kubernetes, over plain HTTPS with a ServiceAccount token bound to its
pod; `tuxio-agent serve` never does. Each round:

1. make an ECDSA P-256 key and a certificate request for the node's names and addresses;
2. create a CertificateSigningRequest of signer `tux.io/agent-serving`, named after the key
   (so asking again after a 5xx or no answer never makes a second one; the operator approves
   and signs it only for the node of the pod the token is bound to);
3. wait for the certificate, and read the host's bearer token from the request, sealed to the
   key (tuxio.common.sealing);
4. write the token file first (the new token, then the one before: the agent takes both, so
   a client still holding the old one is not locked out), then the key and the certificate
   (each written whole and renamed into place; the agent loads them while it runs).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tuxio.common.certificates import san
from tuxio.common.sealing import SEALED_TOKEN_ANNOTATION, SIGNER_NAME, SealingError, unseal

from .errors import HostPrerequisiteMissing

__all__ = [
    "BootstrapSettings",
    "Issued",
    "bootstrap",
    "installed",
    "renew_forever",
]

log = logging.getLogger(__name__)

_CSRS = "/apis/certificates.k8s.io/v1/certificatesigningrequests"
_IN_CLUSTER = Path("/var/run/secrets/tokens/bootstrap")


@dataclass(frozen=True)
class BootstrapSettings:
    """Where to ask and what for."""

    out_dir: Path
    hosts: tuple[str, ...]
    api_server: str
    token_file: Path
    api_ca_file: Path | None
    seconds: int = 7 * 24 * 3600
    timeout: float = 300.0
    name_prefix: str = "tuxio-agent-"

    @classmethod
    def in_cluster(
        cls, out_dir: Path, hosts: tuple[str, ...], credentials_dir: Path | None = None
    ) -> BootstrapSettings:
        """The API server of the pod's cluster, with the projected token and CA."""
        host, port = (
            os.environ.get("KUBERNETES_SERVICE_HOST"),
            os.environ.get("KUBERNETES_SERVICE_PORT", "443"),
        )
        if not host:
            raise HostPrerequisiteMissing("not in a cluster: give --api-server")
        where = credentials_dir or _IN_CLUSTER
        bracketed = f"[{host}]" if ":" in host else host
        return cls(out_dir, hosts, f"https://{bracketed}:{port}", where / "token",
                   where / "ca.crt")  # fmt: skip


@dataclass(frozen=True)
class Issued:
    """What a round got: the certificate's end of life, the request's name."""

    request: str
    not_after: datetime
    not_before: datetime


class _ApiError(HostPrerequisiteMissing):
    """A call the API server did not answer with success; `code` None when no answer came."""

    def __init__(self, message: str, code: int | None, refused: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.refused = refused  # no answer because this end refused the server (its TLS)

    @property
    def transient(self) -> bool:
        """Worth asking again: no answer, too many requests, or the server's own failure (an
        etcd timeout answers 500 and may have stored the request all the same); never a
        server whose certificate does not verify (asking again changes nothing)."""
        if self.code is None:
            return not self.refused
        return self.code == 429 or self.code >= 500


class _Api:
    def __init__(self, settings: BootstrapSettings) -> None:
        self.base = settings.api_server.rstrip("/")
        self.token_file = settings.token_file
        self.context = ssl.create_default_context(
            cafile=str(settings.api_ca_file) if settings.api_ca_file else None
        )

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        # The token is read for every call: the kubelet refreshes a projected one in place.
        token = self.token_file.read_text().strip()
        request = urllib.request.Request(  # noqa: S310 (an https URL we were given)
            self.base + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                     "Accept": "application/json"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=30) as answer:  # noqa: S310
                return dict(json.loads(answer.read()))
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:500].decode(errors="replace")
            raise _ApiError(f"{method} {path}: {exc.code}: {detail}", exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            refused = isinstance(reason, ssl.SSLCertVerificationError)
            raise _ApiError(f"{method} {path}: {exc}", None, refused) from None


def _request_pem(key: ec.EllipticCurvePrivateKey, hosts: tuple[str, ...]) -> bytes:
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .add_extension(x509.SubjectAlternativeName([san(h) for h in hosts]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM)


def _write(path: Path, content: bytes, mode: int) -> None:
    """Whole or not at all: a temporary file beside it, synced, renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(content)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _failure(csr: dict[str, Any]) -> str | None:
    for condition in (csr.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Denied", "Failed") and condition.get("status") != "False":
            return f"{condition['type']}: {condition.get('message', '')}"
    return None


def _key_id(key: ec.EllipticCurvePrivateKey) -> str:
    """The request's name: from its public key, made here for this round, so a name no
    other request has, and the same at every try of this round."""
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()[:20]


def _create(api: _Api, body: dict[str, Any], deadline: float) -> None:
    """POST the request, again after a transient failure (found under load: `500 etcdserver:
    request timed out`, a request that may be stored all the same). Its name is this round's
    own, so a 409 AlreadyExists on a retry is the earlier try's work, not someone else's."""
    tries = 0
    while True:
        try:
            api.call("POST", _CSRS, body)
            return
        except _ApiError as exc:
            if exc.code == 409 and tries:
                return
            if not exc.transient or time.monotonic() > deadline:
                raise
            tries += 1
            log.warning("%s; asking again", exc)
            time.sleep(min(1.0 * tries, 5.0))


def bootstrap(settings: BootstrapSettings) -> Issued:
    """One round (see the module); HostPrerequisiteMissing if the request is refused or
    not answered within the timeout."""
    api = _Api(settings)
    key = ec.generate_private_key(ec.SECP256R1())
    name = settings.name_prefix + _key_id(key)
    body = {
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {
            "signerName": SIGNER_NAME,
            "request": base64.b64encode(_request_pem(key, settings.hosts)).decode(),
            "usages": ["digital signature", "server auth"],
            "expirationSeconds": settings.seconds,
        },
    }
    deadline = time.monotonic() + settings.timeout
    _create(api, body, deadline)
    log.info("certificate request %s made for %s", name, ", ".join(settings.hosts))
    while True:
        try:
            csr = api.call("GET", f"{_CSRS}/{name}")
        except _ApiError as exc:
            if not exc.transient or time.monotonic() > deadline:
                raise
            log.warning("%s; asking again", exc)
            time.sleep(1.0)
            continue
        failed = _failure(csr)
        if failed:
            raise HostPrerequisiteMissing(f"certificate request {name}: {failed}")
        certificate = (csr.get("status") or {}).get("certificate")
        sealed = (csr["metadata"].get("annotations") or {}).get(SEALED_TOKEN_ANNOTATION)
        if certificate and sealed:
            break
        if time.monotonic() > deadline:
            raise HostPrerequisiteMissing(
                f"certificate request {name} not signed within {settings.timeout:.0f}s "
                "(is the operator running, with node registration on?)"
            )
        time.sleep(1.0)
    try:
        token = unseal(sealed, key).decode()
    except SealingError as exc:
        raise HostPrerequisiteMissing(f"certificate request {name}: token: {exc}") from None
    cert_pem = base64.b64decode(certificate)
    cert = x509.load_pem_x509_certificate(cert_pem)
    _install(settings.out_dir, key, cert_pem, token)
    log.info("certificate of request %s installed, valid until %s", name,
             cert.not_valid_after_utc.isoformat())  # fmt: skip
    return Issued(name, cert.not_valid_after_utc, cert.not_valid_before_utc)


def _install(out_dir: Path, key: ec.EllipticCurvePrivateKey, cert_pem: bytes, token: str) -> None:
    token_file = out_dir / "token"
    try:
        before = [t for t in token_file.read_text().split() if t]
    except FileNotFoundError:
        before = []
    kept = [token] + [t for t in before[:1] if t != token]
    _write(token_file, "".join(f"{t}\n" for t in kept).encode(), 0o600)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write(out_dir / "tls.key", key_pem, 0o600)
    _write(out_dir / "tls.crt", cert_pem, 0o644)


def installed(out_dir: Path) -> Issued | None:
    """The certificate installed in `out_dir`, if any."""
    try:
        cert = x509.load_pem_x509_certificate((out_dir / "tls.crt").read_bytes())
    except (OSError, ValueError):
        return None
    return Issued("", cert.not_valid_after_utc, cert.not_valid_before_utc)


def renew_forever(settings: BootstrapSettings) -> None:
    """Renew when two thirds of each certificate's life are gone (starting from the one
    installed, if any); a failed round is tried again a minute later (the certificate in use
    is still good meanwhile)."""
    issued = installed(settings.out_dir)
    while True:
        if issued is not None:
            life = (issued.not_after - issued.not_before).total_seconds()
            due = issued.not_before.timestamp() + life * 2 / 3
            time.sleep(max(0.0, due - datetime.now(UTC).timestamp()))
        try:
            issued = bootstrap(settings)
        except HostPrerequisiteMissing as exc:
            log.error("renewal failed: %s; trying again in 60s", exc)
            time.sleep(60)

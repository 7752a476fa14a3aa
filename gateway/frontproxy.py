"""Requests proxied by the Kubernetes API server, and only those: the front-proxy check.

The API server authenticates every caller itself, then proxies requests for an aggregated API
with its front-proxy client certificate and the caller's identity in request headers
(`X-Remote-User`, `X-Remote-Group`, `X-Remote-Extra-<key>`). Every aggregated API server must
verify that certificate before it believes a single header: against the CA in
`requestheader-client-ca-file` of the ConfigMap kube-system/extension-apiserver-authentication,
with a common name from `requestheader-allowed-names` when that list is not empty, and with the
header names that ConfigMap gives. This is what the Kubernetes apiserver library's request-header
authenticator does for the sample-apiserver, metrics-server and KubeVirt's virt-api.

The chain is verified in the TLS handshake (`server_context` makes the context: client
certificates optional, the request-header CA the only trust anchor, swapped for every new
connection when the ConfigMap changes); `authenticate` then checks the name and reads the
headers. Pure functions, apart from the context.
"""

from __future__ import annotations

import json
import ssl
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import Unauthorized

__all__ = [
    "CONFIGMAP_NAME",
    "CONFIGMAP_NAMESPACE",
    "FrontProxyNotConfigured",
    "RequestHeaderConfig",
    "ServerContexts",
    "UserInfo",
    "authenticate",
    "common_name",
]

CONFIGMAP_NAMESPACE = "kube-system"
CONFIGMAP_NAME = "extension-apiserver-authentication"


class FrontProxyNotConfigured(ValueError):
    """The API server was started without a request-header CA: it cannot proxy to us."""


def _names(data: Mapping[str, str], key: str) -> tuple[str, ...]:
    raw = data.get(key)
    if not raw:
        return ()
    parsed = json.loads(raw)
    if not isinstance(parsed, list) or not all(isinstance(item, str) for item in parsed):
        raise FrontProxyNotConfigured(f"{key} in {CONFIGMAP_NAME} is not a JSON list of strings")
    return tuple(parsed)


@dataclass(frozen=True)
class RequestHeaderConfig:
    """What the API server's --requestheader-* flags said, as the ConfigMap carries them."""

    ca_pem: str
    allowed_names: frozenset[str]
    username_headers: tuple[str, ...]
    group_headers: tuple[str, ...]
    extra_header_prefixes: tuple[str, ...]
    uid_headers: tuple[str, ...] = ()

    @classmethod
    def from_configmap(cls, data: Mapping[str, str]) -> RequestHeaderConfig:
        ca_pem = data.get("requestheader-client-ca-file", "").strip()
        if not ca_pem:
            raise FrontProxyNotConfigured(
                f"{CONFIGMAP_NAMESPACE}/{CONFIGMAP_NAME} has no requestheader-client-ca-file: "
                "start kube-apiserver with --requestheader-client-ca-file and "
                "--proxy-client-cert-file (the aggregation layer)"
            )
        usernames = _names(data, "requestheader-username-headers")
        if not usernames:
            raise FrontProxyNotConfigured(f"{CONFIGMAP_NAME} has no requestheader-username-headers")
        return cls(
            ca_pem=ca_pem,
            allowed_names=frozenset(_names(data, "requestheader-allowed-names")),
            username_headers=usernames,
            group_headers=_names(data, "requestheader-group-headers"),
            extra_header_prefixes=_names(data, "requestheader-extra-headers-prefix"),
            uid_headers=_names(data, "requestheader-uid-headers"),
        )


@dataclass(frozen=True)
class UserInfo:
    """The caller, as the API server authenticated it."""

    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def common_name(peercert: Mapping[str, Any]) -> str | None:
    """The subject's common name in a certificate as `ssl.SSLObject.getpeercert()` gives it."""
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


class _Headers:
    """Case-insensitive access to a request's headers, every value of a repeated one."""

    def __init__(self, items: Iterable[tuple[str, str]]) -> None:
        self.items = [(key.lower(), value) for key, value in items]

    def values(self, name: str) -> list[str]:
        lowered = name.lower()
        return [value for key, value in self.items if key == lowered and value]


def authenticate(
    config: RequestHeaderConfig,
    peercert: Mapping[str, Any] | None,
    headers: Iterable[tuple[str, str]],
) -> UserInfo:
    """The user a proxied request speaks for; Unauthorized unless the connection presented a
    certificate that the handshake verified against the request-header CA (`peercert`, None
    without one) with an allowed common name, and the request names a user.

    As the apiserver library reads them: the first username header with a value; every value
    of every group header (not split at commas); extra keys lower-cased and %-unescaped after
    the prefix.
    """
    if not peercert:
        raise Unauthorized(
            "no verified front-proxy client certificate: only requests proxied by the "
            "Kubernetes API server are served here"
        )
    name = common_name(peercert)
    if config.allowed_names and name not in config.allowed_names:
        raise Unauthorized(f"client certificate {name!r} is not an allowed front proxy")
    found = _Headers(headers)
    user = next((v for h in config.username_headers for v in found.values(h)), None)
    if not user:
        raise Unauthorized("the proxied request names no user")
    uid = next((v for h in config.uid_headers for v in found.values(h)), "")
    groups = tuple(v for h in config.group_headers for v in found.values(h))
    extra: dict[str, list[str]] = {}
    for key, value in found.items:
        for prefix in config.extra_header_prefixes:
            if key.startswith(prefix.lower()) and value:
                extra_key = urllib.parse.unquote(key[len(prefix) :]).lower()
                extra.setdefault(extra_key, []).append(value)
    return UserInfo(user, uid, groups, {k: tuple(v) for k, v in extra.items()})


class ServerContexts:
    """The aggregated API's TLS: its serving certificate, and client certificates verified
    against the request-header CA. A new CA (the ConfigMap changed) makes a new context, which
    every connection accepted from then on gets (through the SNI callback, the one hook that
    runs inside each handshake before the client's certificate is checked)."""

    def __init__(self, cert_file: Path, key_file: Path) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self._current: ssl.SSLContext | None = None
        self.listening = self._context(None)
        self.listening.sni_callback = self._pick

    def _context(self, ca_pem: str | None) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_file, self.key_file)
        # Optional: the kubelet's probes come without one (they reach /healthz only). Set on
        # the listening context too: OpenSSL keeps the verify mode a connection started with
        # when the SNI callback swaps its context, and takes only the trust store from the new.
        context.verify_mode = ssl.CERT_OPTIONAL
        if ca_pem:
            context.load_verify_locations(cadata=ca_pem)
        return context

    def trust(self, ca_pem: str | None) -> None:
        """Verify client certificates against `ca_pem` from the next connection on; None
        (no front proxy configured): trust none, so no request gets past `authenticate`."""
        self._current = self._context(ca_pem) if ca_pem else None

    def reload_certificate(self) -> None:
        """Read the serving certificate again (a rotated Secret)."""
        self.listening.load_cert_chain(self.cert_file, self.key_file)
        if self._current is not None:
            self._current.load_cert_chain(self.cert_file, self.key_file)

    def _pick(self, connection: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        if self._current is not None:
            connection.context = self._current

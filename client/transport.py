"""The SDK's I/O with the API server: the credentials of a kubeconfig (or the in-cluster
ServiceAccount), HTTP requests, watches, and WebSocket streams.

kubernetes_asyncio loads the configuration, whatever authentication it holds (a token, a client
certificate, an exec plugin, OIDC), and keeps it fresh; its aiohttp session, TLS set up from
that configuration, makes every HTTP request. WebSockets go through `websockets` with the same
TLS settings and credentials, because a refused handshake must show the server's JSON reason
(aiohttp's handshake error drops the body).
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from tuxio.common.remotecommand import SUBPROTOCOLS

from .errors import SandboxError, error_for

__all__ = ["Transport", "connect_transport"]

_IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class _Target:
    """Where the configuration points, and its default namespace."""

    namespace: str


def _kubeconfig(kubeconfig: str | None) -> tuple[str, bool]:
    """The kubeconfig path (`kubeconfig`, else $KUBECONFIG, else ~/.kube/config), and whether
    to use the in-cluster ServiceAccount instead (none given, none there, and in a pod)."""
    path = kubeconfig or os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    exists = any(Path(p).exists() for p in path.split(os.pathsep) if p)
    return path, kubeconfig is None and not exists and "KUBERNETES_SERVICE_HOST" in os.environ


def _in_cluster_namespace() -> str:
    if _IN_CLUSTER_NAMESPACE.exists():
        return _IN_CLUSTER_NAMESPACE.read_text().strip() or "default"
    return "default"


async def _load(
    configuration: k8s.Configuration, kubeconfig: str | None, context: str | None
) -> _Target:
    """The configuration of the kubeconfig and `context`, or of the in-cluster
    ServiceAccount; see _kubeconfig."""
    path, in_cluster = _kubeconfig(kubeconfig)
    if in_cluster:
        k8s_config.load_incluster_config(client_configuration=configuration)
        return _Target(_in_cluster_namespace())
    try:
        loader = await k8s_config.load_kube_config(
            config_file=path,
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
    except (k8s_config.ConfigException, OSError) as exc:
        raise SandboxError(f"kubeconfig {path}: {exc}") from exc
    current = loader.current_context or {}
    namespace = (current.get("context") or {}).get("namespace") or "default"
    return _Target(str(namespace))


def _ssl_context(configuration: k8s.Configuration) -> ssl.SSLContext:
    """TLS as kubernetes_asyncio's REST client sets it up from the same configuration."""
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, keyfile=configuration.key_file)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class Transport:
    """Requests to one API server with one set of credentials."""

    def __init__(self, api: k8s.ApiClient, namespace: str) -> None:
        self.api = api
        self.namespace = namespace
        configuration: k8s.Configuration = api.configuration
        self.host = str(configuration.host).rstrip("/")
        self._ssl = _ssl_context(configuration) if self.host.startswith("https") else None
        self._tls_server_name = configuration.tls_server_name

    @property
    def session(self) -> aiohttp.ClientSession:
        session: aiohttp.ClientSession = self.api.rest_client.pool_manager
        return session

    async def close(self) -> None:
        await self.api.close()

    async def headers(self) -> dict[str, str]:
        """The credentials' headers (a bearer token, refreshed when its source says so)."""
        headers: dict[str, str] = {}
        await self.api.update_params_for_auth(headers, [], ["BearerToken"])
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        data: bytes | None = None,
        content_type: str = "application/json",
        timeout: float | None = _TIMEOUT,
    ) -> aiohttp.ClientResponse:
        """The answer to one request, read by the caller; SandboxError for an error answer
        (its Status in the error) or no answer at all."""
        headers = await self.headers()
        headers["Accept"] = "application/json, */*"
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None:
            headers["Content-Type"] = content_type
        try:
            response = await self.session.request(
                method,
                self.host + path,
                params=list(query),
                data=data,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
                server_hostname=self._tls_server_name,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SandboxError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if response.status >= 400:
            async with response:
                raise error_for(response.status, await response.read(), path)
        return response

    async def json(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        data: bytes | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        response = await self.request(
            method, path, query=query, body=body, data=data, content_type=content_type
        )
        async with response:
            answer: dict[str, Any] = await response.json(content_type=None)
        return answer

    async def watch(
        self, path: str, query: Sequence[tuple[str, str]], version: str, seconds: float
    ) -> AsyncIterator[dict[str, Any]]:
        """The events of a watch from `version`, for at most `seconds`."""
        params = [
            *query,
            ("watch", "true"),
            ("resourceVersion", version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(max(1, int(seconds) + 1))),
        ]
        response = await self.request("GET", path, query=params, timeout=seconds + 30)
        async with response:
            pending = b""
            async for chunk in response.content.iter_any():
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)

    async def websocket(
        self,
        path: str,
        query: Sequence[tuple[str, str]],
        *,
        timeout: float = _TIMEOUT,
    ) -> ClientConnection:
        """A WebSocket to `path` offering the remote-command subprotocols (v5, then v4);
        SandboxError with the server's reason when the handshake is refused."""
        url = self.host.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        url += path + ("?" + urlencode(list(query)) if query else "")
        extra: dict[str, Any] = {}
        if self._ssl is not None:
            extra["ssl"] = self._ssl
            if self._tls_server_name:
                extra["server_hostname"] = self._tls_server_name
        try:
            return await connect(
                url,
                additional_headers=await self.headers(),
                subprotocols=[Subprotocol(p) for p in SUBPROTOCOLS],
                compression=None,
                max_size=None,
                open_timeout=timeout,
                proxy=None,
                **extra,
            )
        except InvalidStatus as exc:
            answer = exc.response
            raise error_for(answer.status_code, bytes(answer.body or b""), path) from None
        except (InvalidHandshake, OSError, TimeoutError) as exc:
            raise SandboxError(f"{path}: {type(exc).__name__}: {exc}") from exc


async def connect_transport(
    kubeconfig: str | None = None, context: str | None = None, namespace: str | None = None
) -> Transport:
    """A transport with the credentials of `kubeconfig` and `context` (or in-cluster), to
    `namespace` by default (else the context's, else the ServiceAccount's, else default)."""
    configuration = k8s.Configuration()
    target = await _load(configuration, kubeconfig, context)
    return Transport(k8s.ApiClient(configuration), namespace or target.namespace)

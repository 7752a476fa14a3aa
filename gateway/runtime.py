"""The gateway's parts, put together once per process: the watches that feed them, readiness,
and the front-proxy trust that follows the ConfigMap kube-system/extension-apiserver-authentication.

Stateless: everything here is rebuilt from the API server at start (Sandboxes, hosts, the
front proxy's CA, the signing keys); a replica killed at any instant loses only its open
connections, and terminal sessions live on in the agents (a client reconnects with its
session id, through any replica).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any

from aiohttp import web

from .agents import Agents, Credentials
from .directory import Directory
from .errors import NotReady, Unauthorized
from .frontproxy import (
    CONFIGMAP_NAME,
    CONFIGMAP_NAMESPACE,
    FrontProxyNotConfigured,
    RequestHeaderConfig,
    ServerContexts,
    UserInfo,
    authenticate,
)
from .kube import Kube, Reflector, running
from .settings import GatewaySettings
from .signingkeys import SigningKeys, secret_path
from .streams import Sandboxes

__all__ = ["FrontProxy", "Gateway"]

log = logging.getLogger(__name__)


class FrontProxy:
    """The request-header configuration as the ConfigMap says now (a `kube.Store`), and the
    TLS contexts that trust its CA."""

    def __init__(self, contexts: ServerContexts) -> None:
        self.contexts = contexts
        self.config: RequestHeaderConfig | None = None

    def replace(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            self.apply("ADDED", item)
        if not items:
            log.error(
                "no ConfigMap %s/%s: no request is let in", CONFIGMAP_NAMESPACE, CONFIGMAP_NAME
            )

    def apply(self, kind: str, item: dict[str, Any]) -> None:
        if kind == "DELETED":
            return  # keep the last trust: the API server writes the ConfigMap back at once
        try:
            config = RequestHeaderConfig.from_configmap(item.get("data") or {})
        except (FrontProxyNotConfigured, ValueError) as exc:
            log.error("front proxy: %s", exc)
            self.config = None
            self.contexts.trust(None)
            return
        if config != self.config:
            log.info(
                "front proxy: trusting its CA, allowed names %s, user header %s",
                sorted(config.allowed_names) or "(any)",
                ", ".join(config.username_headers),
            )
        self.config = config
        self.contexts.trust(config.ca_pem)

    def authenticate(
        self, peercert: dict[str, Any] | None, headers: Iterable[tuple[str, str]]
    ) -> UserInfo:
        if self.config is None:
            raise Unauthorized("the front proxy's configuration is not loaded: nothing is let in")
        return authenticate(self.config, peercert, headers)


class Gateway:
    """Settings, the API client, and every part built on them."""

    def __init__(self, settings: GatewaySettings, kube: Kube) -> None:
        self.settings = settings
        self.kube = kube
        self.directory = Directory()
        self.agents = Agents(
            Credentials(kube, settings.credentials_cache_seconds),
            connect_timeout=settings.agent_connect_timeout_seconds,
            request_timeout=settings.agent_request_timeout_seconds,
            max_message_bytes=settings.max_message_bytes,
            allow_plaintext=settings.allow_plaintext_agents,
        )
        self.sandboxes = Sandboxes(self.directory, kube, self.agents)
        self.keys = SigningKeys(
            kube,
            settings.signing_key_namespace,
            settings.signing_key_secret,
            refresh_seconds=settings.signing_key_refresh_seconds,
        )
        self.contexts = ServerContexts(settings.tls_cert_file, settings.tls_key_file)
        # The client side of every stream being relayed (closed with 1001 on shutdown).
        self.open_streams: set[web.WebSocketResponse] = set()
        self.front_proxy = FrontProxy(self.contexts)
        self.reflectors = [
            Reflector(kube, "/apis/tux.io/v1alpha1/sandboxes", self.directory.sandboxes),
            Reflector(kube, "/apis/tux.io/v1alpha1/sandboxhosts", self.directory.hosts),
            Reflector(
                kube,
                f"/api/v1/namespaces/{CONFIGMAP_NAMESPACE}/configmaps",
                self.front_proxy,
                [("fieldSelector", f"metadata.name={CONFIGMAP_NAME}")],
                name="front-proxy configmap",
            ),
            Reflector(
                kube,
                secret_path(settings.signing_key_namespace),
                self.keys,
                [("fieldSelector", f"metadata.name={settings.signing_key_secret}")],
                name="signing key secret",
            ),
        ]

    def not_ready(self) -> list[str]:
        """What keeps the gateway from serving (empty: ready)."""
        missing = [f"{r.name} not listed yet" for r in self.reflectors if not r.synced.is_set()]
        if self.front_proxy.config is None:
            missing.append("no front-proxy configuration")
        if not self.keys.loaded.is_set():
            missing.append("no signing keys")
        return missing

    def require_ready(self) -> None:
        missing = self.not_ready()
        if missing:
            raise NotReady("the gateway is starting: " + "; ".join(missing))

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The watches (and the first signing key) in the background for the block."""
        async with running(*self.reflectors):
            first_key = asyncio.create_task(self.keys.ensure_key(), name="first signing key")
            try:
                yield
            finally:
                first_key.cancel()
                await asyncio.gather(first_key, return_exceptions=True)
                await self.agents.close()

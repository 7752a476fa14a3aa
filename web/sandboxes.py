"""The visitors' sandboxes in Kubernetes: made, listed, tokened and deleted through the SDK
(`tuxio.client`); the hosts' capacity read with the asyncio Kubernetes client (the SDK is
about sandboxes, not hosts).

Every Sandbox carries the labels that tie it to a visitor session, so that a restarted
tuxio-web adopts the ones it made before and a forgotten one is always findable.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config

from tuxio.client import AsyncClient, AsyncSandbox, SandboxNotFound

__all__ = [
    "MANAGED_BY",
    "SESSION_LABEL",
    "TERMINAL_LABEL",
    "Owned",
    "Sandboxes",
    "SdkSandboxes",
    "VisitorSandbox",
]

log = logging.getLogger("tuxio.web")

GROUP, VERSION = "tux.io", "v1alpha1"
MANAGED_BY = {"app.kubernetes.io/managed-by": "tuxio-web"}
SESSION_LABEL = "web.tux.io/session"
TERMINAL_LABEL = "web.tux.io/terminal"


class VisitorSandbox(Protocol):
    """What tuxio-web uses of the SDK's sandbox object."""

    @property
    def name(self) -> str: ...

    @property
    def namespace(self) -> str: ...


@dataclass(frozen=True)
class Owned:
    """A Sandbox of ours, as a list shows it."""

    name: str
    session: str
    terminal: str
    created: str


class Sandboxes(Protocol):
    async def create(self, *, client_ip: str, session: str, terminal: str) -> VisitorSandbox: ...

    async def get(self, name: str) -> VisitorSandbox: ...

    async def token(self, sandbox: VisitorSandbox) -> str: ...

    async def delete(self, name: str) -> None: ...

    async def owned(self) -> list[Owned]: ...

    async def hosts(self) -> list[dict[str, Any]]: ...

    async def close(self) -> None: ...


class SdkSandboxes:
    """The real thing: the SDK for the sandboxes, the Kubernetes client for lists."""

    def __init__(
        self,
        sdk: AsyncClient,
        api: k8s.ApiClient,
        *,
        namespace: str,
        pool: str,
        ttl_seconds: int,
        token_seconds: int,
        ready_timeout: float,
    ) -> None:
        self._sdk = sdk
        self._api = api
        self._custom = k8s.CustomObjectsApi(api)
        self._namespace = namespace
        self._pool = pool
        self._ttl = ttl_seconds
        self._token_seconds = token_seconds
        self._ready_timeout = ready_timeout

    @classmethod
    async def connect(cls, kubeconfig: Path | None, **options: Any) -> SdkSandboxes:
        sdk = AsyncClient(
            kubeconfig=str(kubeconfig) if kubeconfig else None, namespace=options["namespace"]
        )
        await sdk.connect()
        configuration = k8s.Configuration()
        try:
            await k8s_config.load_kube_config(
                config_file=str(kubeconfig) if kubeconfig else None,
                client_configuration=configuration,
            )
        except k8s_config.ConfigException:
            k8s_config.load_incluster_config(client_configuration=configuration)
        return cls(sdk, k8s.ApiClient(configuration), **options)

    async def create(self, *, client_ip: str, session: str, terminal: str) -> VisitorSandbox:
        sandbox: VisitorSandbox = await self._sdk.create(
            pool=self._pool,
            client_ip=client_ip,
            ttl_seconds=self._ttl,
            generate_name="visitor-",
            labels={**MANAGED_BY, SESSION_LABEL: session, TERMINAL_LABEL: terminal},
            wait=True,
            timeout=self._ready_timeout,
        )
        return sandbox

    async def get(self, name: str) -> VisitorSandbox:
        sandbox: VisitorSandbox = await self._sdk.get(name)
        return sandbox

    async def token(self, sandbox: VisitorSandbox) -> str:
        assert isinstance(sandbox, AsyncSandbox)
        minted = await sandbox.token(scopes=["terminal"], seconds=self._token_seconds)
        return str(minted.token)

    async def delete(self, name: str) -> None:
        try:
            sandbox = await self._sdk.get(name)
        except SandboxNotFound:
            return
        await sandbox.delete(wait=False)

    async def owned(self) -> list[Owned]:
        found = []
        for sandbox in await self._sdk.list(labels=MANAGED_BY):
            meta = sandbox.body["metadata"]
            labels = meta.get("labels") or {}
            if meta.get("deletionTimestamp"):
                continue
            found.append(
                Owned(
                    meta["name"],
                    labels.get(SESSION_LABEL, ""),
                    labels.get(TERMINAL_LABEL, ""),
                    meta.get("creationTimestamp", ""),
                )
            )
        return found

    async def hosts(self) -> list[dict[str, Any]]:
        listed = await self._custom.list_cluster_custom_object(GROUP, VERSION, "sandboxhosts")
        return list(listed["items"])

    async def close(self) -> None:
        await self._sdk.close()
        await self._api.close()

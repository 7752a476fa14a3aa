"""The async client: Sandboxes created, read, listed through the Kubernetes API with the
caller's kubeconfig (or in-cluster ServiceAccount), so RBAC decides what it may do."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .api import sandbox_manifest, sandbox_path, sandboxes_path
from .errors import SandboxError
from .sandbox import AsyncSandbox
from .transport import Transport, connect_transport

__all__ = ["AsyncClient"]


class AsyncClient:
    """`async with AsyncClient() as tux:` ... Credentials from `kubeconfig` (else
    $KUBECONFIG, ~/.kube/config, the in-cluster ServiceAccount) and its `context`; Sandboxes
    in `namespace` (else the context's, else `default`)."""

    def __init__(
        self,
        kubeconfig: str | None = None,
        context: str | None = None,
        namespace: str | None = None,
    ) -> None:
        self._kubeconfig = kubeconfig
        self._context = context
        self._namespace = namespace
        self._transport: Transport | None = None

    async def connect(self) -> AsyncClient:
        """Load the credentials (done by `async with`, or by the first request)."""
        if self._transport is None:
            self._transport = await connect_transport(
                self._kubeconfig, self._context, self._namespace
            )
        return self

    async def close(self) -> None:
        if self._transport is not None:
            await self._transport.close()
            self._transport = None

    async def __aenter__(self) -> AsyncClient:
        return await self.connect()

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def _ready_transport(self) -> Transport:
        await self.connect()
        assert self._transport is not None
        return self._transport

    @property
    def namespace(self) -> str:
        """The namespace Sandboxes are in unless a call names another."""
        if self._transport is None:
            raise SandboxError("not connected: use `async with` or await connect() first")
        return self._transport.namespace

    async def create(
        self,
        *,
        template: str | None = None,
        pool: str | None = None,
        name: str | None = None,
        generate_name: str | None = None,
        namespace: str | None = None,
        client_ip: str | None = None,
        ttl_seconds: int | None = None,
        cpus: int | None = None,
        memory: str | None = None,
        pids: int | None = None,
        resources: Mapping[str, Any] | None = None,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        host_selector: Mapping[str, str] | None = None,
        region: str | None = None,
        wait: bool = True,
        timeout: float = 30.0,
    ) -> AsyncSandbox:
        """A new Sandbox from `template` or from `pool` (a warm container); named `name`, or
        `generate_name` plus a random suffix (`sandbox-` when neither is given). With `wait`,
        returned once Ready (SandboxTimeout after `timeout` seconds; it is not deleted then)."""
        transport = await self._ready_transport()
        if name is None and generate_name is None:
            generate_name = "sandbox-"
        manifest = sandbox_manifest(
            name=name,
            generate_name=generate_name,
            template=template,
            pool=pool,
            client_ip=client_ip,
            ttl_seconds=ttl_seconds,
            cpus=cpus,
            memory=memory,
            pids=pids,
            resources=resources,
            labels=labels,
            annotations=annotations,
            host_selector=host_selector,
            region=region,
        )
        body = await transport.json(
            "POST", sandboxes_path(namespace or transport.namespace), body=manifest
        )
        sandbox = AsyncSandbox(transport, body)
        if wait:
            await sandbox.wait_ready(timeout)
        return sandbox

    async def get(self, name: str, namespace: str | None = None) -> AsyncSandbox:
        """The Sandbox `name`; SandboxNotFound if there is none."""
        transport = await self._ready_transport()
        body = await transport.json("GET", sandbox_path(namespace or transport.namespace, name))
        return AsyncSandbox(transport, body)

    async def list(
        self, namespace: str | None = None, labels: Mapping[str, str] | None = None
    ) -> list[AsyncSandbox]:
        """The Sandboxes of the namespace, those with all `labels` when given."""
        transport = await self._ready_transport()
        query: list[tuple[str, str]] = []
        if labels:
            query.append(("labelSelector", ",".join(f"{k}={v}" for k, v in labels.items())))
        listing = await transport.json(
            "GET", sandboxes_path(namespace or transport.namespace), query=query
        )
        return [AsyncSandbox(transport, item) for item in listing.get("items") or []]

"""Where each Sandbox runs: a book of Sandboxes and SandboxHosts, fed by two watches.

A Sandbox's status says which host runs it and under which container name; the host's spec
says where its agent listens and which Secret holds the agent's token and CA. The gateway keeps
only those fields (and the Sandbox's UID and phase), so that a connection finds its agent
without a request to the API server. Pure: the reflectors of `kube` feed it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Directory", "HostRoute", "SandboxRoute", "host_route", "sandbox_route"]


@dataclass(frozen=True)
class SandboxRoute:
    """A Sandbox as the gateway needs it."""

    namespace: str
    name: str
    uid: str
    phase: str | None
    host: str | None
    container: str | None

    @property
    def running(self) -> bool:
        return self.phase == "Running" and bool(self.host) and bool(self.container)


@dataclass(frozen=True)
class HostRoute:
    """A SandboxHost's agent: where it is and which Secret holds its credentials."""

    name: str
    endpoint: str
    secret_namespace: str
    secret_name: str
    token_key: str
    ca_key: str | None


def sandbox_route(body: Mapping[str, Any]) -> SandboxRoute:
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    return SandboxRoute(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        phase=status.get("phase"),
        host=status.get("host"),
        container=status.get("containerName"),
    )


def host_route(body: Mapping[str, Any]) -> HostRoute | None:
    """The host's route; None while its spec lacks an endpoint or credentials."""
    spec = body.get("spec") or {}
    ref = spec.get("credentialsSecretRef") or {}
    endpoint, secret, namespace = spec.get("endpoint"), ref.get("name"), ref.get("namespace")
    if not (endpoint and secret and namespace):
        return None
    return HostRoute(
        name=str((body.get("metadata") or {}).get("name", "")),
        endpoint=str(endpoint).rstrip("/"),
        secret_namespace=str(namespace),
        secret_name=str(secret),
        token_key=str(ref.get("tokenKey") or "token"),
        ca_key=ref.get("caKey") or None,
    )


class _Book:
    """One kind's objects by key, replaced by a list and changed by watch events."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], Any] = {}

    def key(self, body: Mapping[str, Any]) -> tuple[str, str]:
        meta = body.get("metadata") or {}
        return str(meta.get("namespace", "")), str(meta.get("name", ""))

    def route(self, body: Mapping[str, Any]) -> Any:
        raise NotImplementedError

    def replace(self, items: list[dict[str, Any]]) -> None:
        fresh = {self.key(body): self.route(body) for body in items}
        self.items = {key: value for key, value in fresh.items() if value is not None}

    def apply(self, kind: str, item: dict[str, Any]) -> None:
        key = self.key(item)
        route = None if kind == "DELETED" else self.route(item)
        if route is None:
            self.items.pop(key, None)
        else:
            self.items[key] = route


class SandboxBook(_Book):
    def route(self, body: Mapping[str, Any]) -> SandboxRoute:
        return sandbox_route(body)


class HostBook(_Book):
    def route(self, body: Mapping[str, Any]) -> HostRoute | None:
        return host_route(body)


class Directory:
    """Sandboxes and hosts, as the watches last told."""

    def __init__(self) -> None:
        self.sandboxes = SandboxBook()
        self.hosts = HostBook()

    def sandbox(self, namespace: str, name: str) -> SandboxRoute | None:
        found: SandboxRoute | None = self.sandboxes.items.get((namespace, name))
        return found

    def host(self, name: str) -> HostRoute | None:
        found: HostRoute | None = self.hosts.items.get(("", name))
        return found

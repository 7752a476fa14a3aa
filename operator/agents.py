"""The agents of the hosts: one client per SandboxHost, made from its credentials Secret.

A client is rebuilt when the host's endpoint or credentials change, and dropped when its
agent answered 401 (the token was rotated), so the next call reads the Secret again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from .agentclient import AgentClient
from .records import HostRecord

__all__ = ["AgentRegistry", "CredentialsMissing", "SecretReader"]

# How a Secret is read: (namespace, name) -> its data, decoded.
SecretReader = Callable[[str, str], Awaitable[dict[str, str]]]


class CredentialsMissing(LookupError):
    """The Secret with a host's token cannot be read or lacks the key."""


class AgentRegistry:
    """One AgentClient per host, rebuilt when the host's endpoint or credentials change."""

    def __init__(self, read_secret: SecretReader, timeout: float) -> None:
        self._read_secret = read_secret
        self.timeout = timeout
        self._clients: dict[str, tuple[tuple[str | None, ...], AgentClient]] = {}

    async def client(self, host: HostRecord) -> AgentClient:
        ref = host.spec.credentials_secret_ref
        key = (host.spec.endpoint, ref.name, ref.namespace, ref.token_key, ref.ca_key)
        cached = self._clients.get(host.name)
        if cached and cached[0] == key:
            return cached[1]
        try:
            data = await self._read_secret(ref.namespace, ref.name)
        except Exception as exc:
            raise CredentialsMissing(
                f"cannot read Secret {ref.namespace}/{ref.name}: {exc}"
            ) from exc
        if ref.token_key not in data:
            raise CredentialsMissing(
                f"Secret {ref.namespace}/{ref.name} has no key {ref.token_key}"
            )
        client = AgentClient(
            host.spec.endpoint.rstrip("/"),
            data[ref.token_key].strip(),
            ca_pem=data.get(ref.ca_key) if ref.ca_key else None,
            timeout=self.timeout,
        )
        if cached:
            await cached[1].aclose()
        self._clients[host.name] = (key, client)
        return client

    async def forget(self, host_name: str) -> None:
        """Drop a host's client (it answered 401: its credentials changed)."""
        cached = self._clients.pop(host_name, None)
        if cached:
            await cached[1].aclose()

    async def close(self) -> None:
        for _, client in self._clients.values():
            await client.aclose()
        self._clients.clear()

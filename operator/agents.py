"""The agents of the hosts: one client per SandboxHost, made from its credentials Secret.

A client is rebuilt when the host's endpoint or credentials change, and dropped as soon as its
agent answers 401 to every token it has (the token was rotated), so the next call reads the
Secret again. Each host has its own Secret (`tuxio-agent-<host>` for the hosts of nodes, see
tuxio.operator.agent_signer): the token of one host is never sent to another.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from tuxio.common.endpoints import endpoint_refusal

from .agentclient import AgentClient
from .records import HostRecord

__all__ = [
    "PREVIOUS_TOKEN_KEY",
    "AgentRegistry",
    "CredentialsMissing",
    "InsecureEndpoint",
    "SecretReader",
]

# The key of a host's Secret with the token it had before the last rotation: still sent (after
# the current one is refused) until the agent has picked up the new one.
PREVIOUS_TOKEN_KEY = "previous-token"  # noqa: S105 (a key name, not a token)

# How a Secret is read: (namespace, name) -> its data, decoded.
SecretReader = Callable[[str, str], Awaitable[dict[str, str]]]


class CredentialsMissing(LookupError):
    """The Secret with a host's token cannot be read or lacks the key."""


class InsecureEndpoint(CredentialsMissing):
    """The host's endpoint is http:// where that is not allowed: its token is never sent."""


class AgentRegistry:
    """One AgentClient per host, rebuilt when the host's endpoint or credentials change."""

    def __init__(
        self, read_secret: SecretReader, timeout: float, allow_loopback_plaintext: bool = False
    ) -> None:
        self._read_secret = read_secret
        self.timeout = timeout
        self.allow_loopback_plaintext = allow_loopback_plaintext
        self._clients: dict[str, tuple[tuple[str | None, ...], AgentClient]] = {}
        # Clients dropped after a 401, closed on the next `client()` (calls in flight finish).
        self._retired: list[AgentClient] = []

    async def client(self, host: HostRecord) -> AgentClient:
        while self._retired:
            await self._retired.pop().aclose()
        refused = endpoint_refusal(host.spec.endpoint, self.allow_loopback_plaintext)
        if refused:
            raise InsecureEndpoint(refused)
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
        previous = data.get(PREVIOUS_TOKEN_KEY, "").strip() or None
        client = AgentClient(
            host.spec.endpoint.rstrip("/"),
            data[ref.token_key].strip(),
            previous_token=previous,
            ca_pem=data.get(ref.ca_key) if ref.ca_key else None,
            timeout=self.timeout,
            on_unauthorized=lambda refused: self._drop(host.name, refused),
        )
        if cached:
            await cached[1].aclose()
        self._clients[host.name] = (key, client)
        return client

    def _drop(self, host_name: str, client: AgentClient) -> None:
        """Forget `client` (its agent refused its tokens) if it is still the host's; it is
        closed by whoever holds it, or when it is garbage, not here (a call may be using it)."""
        cached = self._clients.get(host_name)
        if cached and cached[1] is client:
            del self._clients[host_name]
            self._retired.append(client)

    async def forget(self, host_name: str) -> None:
        """Drop a host's client (it answered 401: its credentials changed)."""
        cached = self._clients.pop(host_name, None)
        if cached:
            await cached[1].aclose()

    async def close(self) -> None:
        while self._retired:
            await self._retired.pop().aclose()
        for _, client in self._clients.values():
            await client.aclose()
        self._clients.clear()

"""The agents, as the gateway reaches them: credentials from each host's Secret, TLS verified
with the host's CA, streams over WebSocket (the `websockets` library) and files over HTTP
(aiohttp).

Only the gateway ever holds an agent's token: visitors and Kubernetes users reach an agent
through it, never directly. A refusal by the agent before a WebSocket upgrade comes back with
its status and JSON reason (`AgentRefused`), so that the caller gets the agent's own words; a
refusal of the gateway's own credentials, a server error or no answer is `AgentUnreachable`.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import ssl
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidHandshake, InvalidStatus

from tuxio.common.endpoints import endpoint_refusal

from .directory import HostRoute, SandboxRoute
from .errors import AgentRefused, AgentUnreachable
from .kube import Kube, KubeError, KubeNotFound

__all__ = ["AgentCredentials", "AgentTarget", "Agents", "Credentials", "refusal"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentCredentials:
    """An agent's bearer token, and the CA its certificate is verified with (None: the
    system's)."""

    token: str
    ca_pem: str | None
    # The host's token before the last rotation, while its agent may not have the new one.
    previous: str | None = None

    def __repr__(self) -> str:  # never the token, not even in a traceback
        return f"AgentCredentials(token=<{len(self.token)} chars>, ca_pem={bool(self.ca_pem)})"


class Credentials:
    """Agents' credentials read from their Secrets, kept for `ttl` seconds (a rotated token is
    read again at once when the agent refuses the old one)."""

    def __init__(self, kube: Kube, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.kube = kube
        self.ttl = ttl
        self.clock = clock
        self._cache: dict[HostRoute, tuple[float, AgentCredentials]] = {}

    async def get(self, host: HostRoute) -> AgentCredentials:
        cached = self._cache.get(host)
        if cached is not None and self.clock() - cached[0] < self.ttl:
            return cached[1]
        found = await self._read(host)
        self._cache[host] = (self.clock(), found)
        return found

    def forget(self, host: HostRoute) -> None:
        self._cache.pop(host, None)

    async def _read(self, host: HostRoute) -> AgentCredentials:
        where = f"{host.secret_namespace}/{host.secret_name}"
        try:
            secret = await self.kube.get(
                f"/api/v1/namespaces/{host.secret_namespace}/secrets/{host.secret_name}"
            )
        except KubeNotFound:
            raise AgentUnreachable(
                f"host {host.name}: credentials Secret {where} not found"
            ) from None
        except KubeError as exc:
            raise AgentUnreachable(
                f"host {host.name}: credentials Secret {where} unreadable ({exc.status})"
            ) from None
        data = secret.get("data") or {}
        token = _decoded(data, host.token_key)
        if not token:
            raise AgentUnreachable(f"host {host.name}: no {host.token_key!r} in {where}")
        ca = _decoded(data, host.ca_key) if host.ca_key else None
        if host.ca_key and not ca:
            raise AgentUnreachable(f"host {host.name}: no {host.ca_key!r} in {where}")
        previous = (_decoded(data, "previous-token") or "").strip() or None
        return AgentCredentials(token.strip(), ca, previous)


def _decoded(data: Mapping[str, str], key: str | None) -> str | None:
    if not key or key not in data:
        return None
    return base64.b64decode(data[key]).decode()


@functools.lru_cache(maxsize=64)
def _client_context(ca_pem: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=ca_pem) if ca_pem else ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


@dataclass(frozen=True)
class AgentTarget:
    """One Sandbox's container on its host's agent, with the credentials to reach it."""

    sandbox: SandboxRoute
    host: HostRoute
    credentials: AgentCredentials

    @property
    def container(self) -> str:
        assert self.sandbox.container is not None
        return self.sandbox.container

    def url(self, route: str, query: Sequence[tuple[str, str]] = (), scheme: str = "") -> str:
        base = self.host.endpoint
        if scheme:
            base = scheme + base[base.index(":") :]
        path = f"{base}/v1/containers/{urllib.parse.quote(self.container)}/{route}"
        return f"{path}?{urllib.parse.urlencode(query)}" if query else path

    @property
    def tls(self) -> ssl.SSLContext | None:
        if not self.host.endpoint.startswith("https://"):
            return None
        return _client_context(self.credentials.ca_pem)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.credentials.token}"}


def refusal(status: int, body: bytes | bytearray, what: str) -> AgentRefused | AgentUnreachable:
    """The error for an agent's answer `status` with `body` (its JSON {"reason", "message"})."""
    try:
        answer: Any = json.loads(body) if body else {}
    except ValueError:
        answer = {}
    if not isinstance(answer, dict):
        answer = {}
    reason = str(answer.get("reason") or "AgentError")
    message = str(answer.get("message") or f"the agent answered {status}")
    if status == 401:
        return AgentUnreachable(f"{what}: the agent refused the gateway's credentials: {message}")
    if 400 <= status < 500:
        return AgentRefused(status, reason, message)
    return AgentUnreachable(f"{what}: the agent answered {status}: {message}")


class Agents:
    """Opening streams and files requests on agents."""

    def __init__(
        self,
        credentials: Credentials,
        *,
        connect_timeout: float,
        request_timeout: float,
        max_message_bytes: int,
        allow_plaintext: bool,
    ) -> None:
        self.credentials = credentials
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.max_message_bytes = max_message_bytes
        self.allow_plaintext = allow_plaintext
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def target(self, sandbox: SandboxRoute, host: HostRoute) -> AgentTarget:
        refused = endpoint_refusal(host.endpoint, self.allow_plaintext)
        if refused:
            raise AgentUnreachable(f"host {host.name}: {refused}")
        return AgentTarget(sandbox, host, await self.credentials.get(host))

    async def _renewed(self, target: AgentTarget) -> AgentTarget:
        """The credentials to try after a 401: the Secret read again; if it still holds the
        refused token, the one before it (a rotation the agent has not picked up yet)."""
        self.credentials.forget(target.host)
        found = await self.credentials.get(target.host)
        if found.token == target.credentials.token and found.previous:
            found = AgentCredentials(found.previous, found.ca_pem)
        return AgentTarget(target.sandbox, target.host, found)

    async def open_stream(
        self,
        target: AgentTarget,
        query: Sequence[tuple[str, str]],
        subprotocols: Sequence[str],
    ) -> ClientConnection:
        """A WebSocket to the container's exec route; the agent picks one of `subprotocols`.
        A 401 is tried once more with the credentials read again (a rotated token)."""
        try:
            return await self._connect(target, query, subprotocols)
        except InvalidStatus as exc:
            if exc.response.status_code != 401:
                raise refusal(exc.response.status_code, exc.response.body or b"", "exec") from None
        target = await self._renewed(target)
        try:
            return await self._connect(target, query, subprotocols)
        except InvalidStatus as exc:
            raise refusal(exc.response.status_code, exc.response.body or b"", "exec") from None

    async def _connect(
        self, target: AgentTarget, query: Sequence[tuple[str, str]], subprotocols: Sequence[str]
    ) -> ClientConnection:
        scheme = "wss" if target.tls is not None else "ws"
        try:
            return await websockets.connect(
                target.url("exec", query, scheme=scheme),
                subprotocols=[websockets.Subprotocol(p) for p in subprotocols],
                additional_headers=target.headers,
                ssl=target.tls,
                compression=None,  # frames are relayed as they come; deflate costs CPU twice
                max_size=self.max_message_bytes,
                open_timeout=self.connect_timeout,
                ping_interval=20,
                ping_timeout=60,
                proxy=None,
                user_agent_header="tuxio-gateway",
            )
        except InvalidStatus:
            raise
        except (InvalidHandshake, OSError, TimeoutError) as exc:
            raise AgentUnreachable(
                f"host {target.host.name}: {type(exc).__name__}: {exc}"
            ) from None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(
                    total=self.request_timeout, sock_connect=self.connect_timeout
                ),
                auto_decompress=False,
            )
        return self._session

    async def end_session(self, target: AgentTarget, session: str) -> tuple[int, bytes]:
        """End a terminal session of the container (the agent hangs it up and kills it):
        the agent's status and JSON answer, refusals raised as `refusal` says."""
        try:
            async with self._http().delete(
                target.url(f"sessions/{urllib.parse.quote(session)}"),
                headers=target.headers,
                ssl=target.tls if target.tls is not None else True,
            ) as response:
                text = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AgentUnreachable(
                f"host {target.host.name}: {type(exc).__name__}: {exc}"
            ) from None
        if response.status >= 400:
            if response.status == 401:
                self.credentials.forget(target.host)
            raise refusal(response.status, text, "terminal")
        return response.status, text

    async def files(
        self,
        target: AgentTarget,
        method: str,
        query: Sequence[tuple[str, str]],
        body: aiohttp.StreamReader | None,
        headers: Mapping[str, str],
    ) -> aiohttp.ClientResponse:
        """The agent's answer to a files request, its body not yet read (the caller streams
        it on and releases it). A refusal is raised as `refusal` says; the body is streamed
        as it comes (no retry: it cannot be sent twice)."""
        try:
            response = await self._http().request(
                method,
                target.url("files", query),
                data=body,
                headers={**headers, **target.headers},
                ssl=target.tls if target.tls is not None else True,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AgentUnreachable(
                f"host {target.host.name}: {type(exc).__name__}: {exc}"
            ) from None
        if response.status >= 400:
            text = await response.read()
            response.release()
            if response.status == 401:
                self.credentials.forget(target.host)
            raise refusal(response.status, text, "files")
        return response

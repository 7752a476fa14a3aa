"""A typed async client of the node agent's HTTP API.

Requests are plain aiohttp (the operator's hot path: a fifth of httpx's CPU per request, and
kopf's own HTTP library); every answer is parsed into the agent's own models, and every
failure becomes one of three errors: `AgentUnreachable` (network trouble or a 5xx: retry
later), `AgentUnauthorized` (a 401: the token is not, or no longer, the agent's; read the
credentials again) or `AgentRejected` (any other 4xx: the request itself is wrong), all carrying
the agent's answer.

A client may hold two tokens of its host (the current one and the one before a rotation, while
the agent may not have the new one yet): a 401 with one is tried once with the other, and the
token that worked is used from then on.
"""

from __future__ import annotations

import json as jsonlib
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import aiohttp
from pydantic import BaseModel as _Model

from tuxio.nodeagent.models import (
    ContainerList,
    ContainerSpec,
    ContainerStatus,
    ErrorBody,
    ExecRequest,
    ExecResult,
    HostInfo,
)

__all__ = [
    "AgentClient",
    "AgentError",
    "AgentRejected",
    "AgentUnauthorized",
    "AgentUnreachable",
]


class AgentError(Exception):
    """A call to an agent failed; `body` is the agent's structured answer when it gave one."""

    def __init__(self, message: str, status: int | None = None, body: ErrorBody | None = None):
        super().__init__(message)
        self.status = status
        self.body = body

    @property
    def reason(self) -> str:
        return self.body.reason if self.body else "Unreachable"


class AgentUnreachable(AgentError):
    """No answer, or a 5xx: the agent or its host is in trouble; retrying may help."""


class AgentRejected(AgentError):
    """A 4xx: the agent understood and refused; the same request will fail again."""


class AgentUnauthorized(AgentError):
    """A 401: the agent does not take the token (rotated, or another host's). Reading the
    host's credentials again may help; the request itself may be fine."""


@dataclass(frozen=True)
class _Answer:
    status: int
    content: bytes


class AgentClient:
    """One agent, at `base_url`, with its bearer token. Its connections are opened in the
    event loop of the first call (aiohttp sessions belong to one loop)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        previous_token: str | None = None,
        ca_pem: str | None = None,
        timeout: float = 30.0,
        max_connections: int = 64,
        on_unauthorized: Callable[[AgentClient], None] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._tokens = [token] + ([previous_token] if previous_token else [])
        # The agent's own CA (often a self-signed pair) when given, the system's otherwise.
        self._ssl: ssl.SSLContext | bool = (
            ssl.create_default_context(cadata=ca_pem) if ca_pem else True
        )
        self._timeout = timeout
        # Told when the agent took none of the tokens (the registry then drops this client, so
        # the next call reads the host's Secret again).
        self._on_unauthorized = on_unauthorized
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections, ssl=self._ssl),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            )
        return self._session

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: _Model | None = None,
        params: Sequence[tuple[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> _Answer:
        if body is not None:
            headers = {**(headers or {}), "Content-Type": "application/json"}
        for attempt, token in enumerate(list(self._tokens)):
            answer = await self._once(
                method, path, body, params, {**(headers or {}), "Authorization": f"Bearer {token}"},
                timeout,
            )  # fmt: skip
            if answer.status != 401 or attempt == len(self._tokens) - 1:
                break
        if answer.status < 400:
            if token != self._tokens[0]:
                # The agent takes the other token: it is the one to use from now on.
                self._tokens.remove(token)
                self._tokens.insert(0, token)
            return answer
        reason: ErrorBody | None
        try:
            reason = ErrorBody.model_validate_json(answer.content)
        except ValueError:
            reason = None
        message = reason.message if reason else answer.content[:500].decode(errors="replace")
        if answer.status == 401 and self._on_unauthorized is not None:
            self._on_unauthorized(self)
        error = (
            AgentUnreachable
            if answer.status >= 500
            else AgentUnauthorized
            if answer.status == 401
            else AgentRejected
        )
        raise error(f"{method} {path}: {answer.status}: {message}", answer.status, reason)

    async def _once(
        self,
        method: str,
        path: str,
        body: _Model | None,
        params: Sequence[tuple[str, str]] | None,
        headers: dict[str, str],
        timeout: float | None,
    ) -> _Answer:
        try:
            async with self._http().request(
                method,
                self.base_url + path,
                data=None
                if body is None
                else body.model_dump_json(by_alias=True, exclude_none=True).encode(),
                params=params,
                headers=headers,
                # Always given: aiohttp reads an explicit None as no timeout at all.
                timeout=aiohttp.ClientTimeout(total=self._timeout if timeout is None else timeout),
            ) as response:
                answer = _Answer(response.status, await response.read())
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AgentUnreachable(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        return answer

    async def healthz(self) -> bool:
        return (await self._call("GET", "/healthz")).status == 200

    async def host(self) -> HostInfo:
        return HostInfo.model_validate_json((await self._call("GET", "/v1/host")).content)

    async def put(
        self,
        name: str,
        spec: ContainerSpec,
        *,
        if_match: str | None = None,
        if_absent: bool = False,
    ) -> ContainerStatus:
        """Converge `name` to `spec`. With `if_match` (an ETag the agent gave), only if the
        container still has it; with `if_absent`, only if there is no such container yet.
        Otherwise AgentRejected with status 412, and nothing changed."""
        headers = {}
        if if_match is not None:
            headers["If-Match"] = f'"{if_match}"'
        if if_absent:
            headers["If-None-Match"] = "*"
        response = await self._call(
            "PUT",
            f"/v1/containers/{name}",
            body=spec,
            headers=headers or None,
        )
        return ContainerStatus.model_validate_json(response.content)

    async def get(self, name: str) -> ContainerStatus | None:
        try:
            response = await self._call("GET", f"/v1/containers/{name}")
        except AgentRejected as exc:
            if exc.status == 404:
                return None
            raise
        return ContainerStatus.model_validate_json(response.content)

    async def list(self, labels: dict[str, str] | None = None) -> list[ContainerStatus]:
        params = [("label", f"{k}={v}") for k, v in (labels or {}).items()]
        response = await self._call("GET", "/v1/containers", params=params)
        return ContainerList.model_validate_json(response.content).items

    async def delete(self, name: str) -> bool:
        response = await self._call("DELETE", f"/v1/containers/{name}")
        return bool(jsonlib.loads(response.content)["deleted"])

    async def exec(self, name: str, request: ExecRequest) -> ExecResult:
        response = await self._call(
            "POST",
            f"/v1/containers/{name}/exec",
            body=request,
            timeout=request.timeout_seconds + 30,
        )
        return ExecResult.model_validate_json(response.content)

"""A typed async client of the node agent's HTTP API.

Request building is plain httpx; every answer is parsed into the agent's own models, and every
failure becomes one of two errors: `AgentUnreachable` (network trouble or a 5xx: retry later)
or `AgentRejected` (a 4xx: the request itself is wrong), both carrying the agent's answer.
"""

from __future__ import annotations

import ssl
from types import TracebackType
from typing import Any, Self

import httpx

from tuxio.nodeagent.models import (
    ContainerList,
    ContainerSpec,
    ContainerStatus,
    ErrorBody,
    ExecRequest,
    ExecResult,
    HostInfo,
)

__all__ = ["AgentClient", "AgentError", "AgentRejected", "AgentUnreachable"]


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


class AgentClient:
    """One agent, at `base_url`, with its bearer token."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        ca_pem: str | None = None,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            # The agent's own CA (often a self-signed pair) when given, the system's otherwise.
            verify=ssl.create_default_context(cadata=ca_pem) if ca_pem else True,
            timeout=timeout,
            transport=transport,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
        )

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
        await self._http.aclose()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        try:
            response = await self._http.request(
                method,
                path,
                json=json,
                params=params,
                headers=headers,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.HTTPError as exc:
            raise AgentUnreachable(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if response.status_code < 400:
            return response
        body: ErrorBody | None
        try:
            body = ErrorBody.model_validate(response.json())
        except ValueError:
            body = None
        message = body.message if body else response.text[:500]
        error = AgentUnreachable if response.status_code >= 500 else AgentRejected
        raise error(
            f"{method} {path}: {response.status_code}: {message}", response.status_code, body
        )

    async def healthz(self) -> bool:
        return (await self._call("GET", "/healthz")).status_code == 200

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
            json=spec.model_dump(mode="json", by_alias=True, exclude_none=True),
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
        return bool(response.json()["deleted"])

    async def exec(self, name: str, request: ExecRequest) -> ExecResult:
        response = await self._call(
            "POST",
            f"/v1/containers/{name}/exec",
            json=request.model_dump(mode="json", by_alias=True, exclude_none=True),
            timeout=request.timeout_seconds + 30,
        )
        return ExecResult.model_validate_json(response.content)

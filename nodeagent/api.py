"""The HTTP edge: routes, bearer-token authentication, and errors mapped to status codes.

No `from __future__ import annotations` here: FastAPI reads these annotations at run time.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError, WebSocketRequestValidationError
from fastapi.requests import HTTPConnection
from fastapi.responses import JSONResponse

from . import __version__
from .credentials import ServingCertificate, TokenFile
from .deps import Authenticated, ContainerName, Service, Unauthorized
from .errors import (
    AgentError,
    ContainerNotFound,
    ContainerNotRunning,
    ContainerQuarantined,
    DiskBelowReserve,
    DiskSetupFailed,
    FileNotFound,
    FileTooLarge,
    HostPrerequisiteMissing,
    InsufficientStorage,
    InvalidExecRequest,
    InvalidPath,
    InvalidSpec,
    IsADirectory,
    NoAcceptableSubprotocol,
    OutputBudgetExhausted,
    PermissionDenied,
    PreconditionFailed,
    ReadOnlyFilesystem,
    SessionNotFound,
    SpecConflict,
    TooManySessions,
    UnknownTemplate,
    UnsupportedFileType,
    UpgradeRequired,
)
from .file_routes import files_router
from .files import ContainerFiles
from .metrics import RequestMetrics
from .models import (
    ContainerList,
    ContainerSpec,
    ContainerStatus,
    ErrorBody,
    ExecRequest,
    ExecResult,
    HostInfo,
)
from .service import ANY, ContainerService
from .stream_routes import streams_router
from .terminals import SessionTable

__all__ = ["MalformedHeader", "create_app", "openapi_document", "parse_if_match"]

log = logging.getLogger(__name__)

_STATUS: dict[type[AgentError], int] = {
    InvalidSpec: 422,
    UnknownTemplate: 422,
    SpecConflict: 409,
    ContainerQuarantined: 409,
    ContainerNotRunning: 409,
    ContainerNotFound: 404,
    PreconditionFailed: 412,
    HostPrerequisiteMissing: 503,
    UpgradeRequired: 400,
    NoAcceptableSubprotocol: 400,
    InvalidExecRequest: 400,
    TooManySessions: 429,
    OutputBudgetExhausted: 429,
    SessionNotFound: 404,
    InvalidPath: 400,
    UnsupportedFileType: 400,
    IsADirectory: 400,
    FileNotFound: 404,
    PermissionDenied: 403,
    ReadOnlyFilesystem: 409,
    FileTooLarge: 413,
    InsufficientStorage: 507,
    DiskBelowReserve: 507,
    DiskSetupFailed: 500,
}

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 404, 409, 412, 415, 422, 500)
}


class MalformedHeader(ValueError):
    """A request header the agent reads is not well-formed (answered with 400)."""


def parse_if_match(header: str, name: str = "If-Match") -> set[str]:
    """The entity tags of an If-Match or If-None-Match header (RFC 9110 13.1): `*`, or a list
    of quoted tags. Weak tags (W/"...") are left out: the agent compares strongly."""
    if header.strip() == "*":
        return {ANY}
    tags: set[str] = set()
    for item in header.split(","):
        tag = item.strip()
        if tag.startswith("W/"):
            continue
        if len(tag) < 2 or not (tag.startswith('"') and tag.endswith('"')) or '"' in tag[1:-1]:
            raise MalformedHeader(f"{name}: {tag!r} is not a quoted entity tag or *")
        tags.add(tag[1:-1])
    return tags


def _etag(status: ContainerStatus) -> str:
    return f'"{status.spec_hash}"'


def _error(status: int, reason: str, message: str, details: Any = None) -> JSONResponse:
    body = ErrorBody(reason=reason, message=message, details=details)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(
        body.model_dump(mode="json", by_alias=True, exclude_none=True), status, headers=headers
    )


def _parse_selector(labels: list[str]) -> dict[str, str]:
    selector: dict[str, str] = {}
    for item in labels:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidSpec(f"label selector {item!r} is not of the form key=value")
        selector[key] = value
    return selector


v1 = APIRouter(prefix="/v1", dependencies=Authenticated, responses=_ERRORS)


@v1.get("/host", tags=["host"])
async def get_host(service: Service) -> HostInfo:
    """What the host offers and how busy it is."""
    return await service.host_info()


@v1.put("/containers/{name}", tags=["containers"])
async def put_container(
    name: ContainerName,
    spec: ContainerSpec,
    service: Service,
    response: Response,
    if_match: Annotated[
        str | None,
        Header(
            description="Converge only a container that exists and whose ETag (the hash of "
            "the spec it converged to) is one of these; else 412 and nothing changes. How a "
            "caller adopts a container that others may be adopting at the same time."
        ),
    ] = None,
    if_none_match: Annotated[
        str | None,
        Header(
            description="`*`: converge only if no container of this name exists (create, "
            "never take over); else 412 and nothing changes."
        ),
    ] = None,
) -> ContainerStatus:
    """Converge the container to `spec` and answer with what is observed afterwards."""
    status = await service.put(
        name,
        spec,
        None if if_match is None else parse_if_match(if_match),
        None if if_none_match is None else parse_if_match(if_none_match, "If-None-Match"),
    )
    response.headers["ETag"] = _etag(status)
    return status


@v1.get("/containers/{name}", tags=["containers"])
async def get_container(
    name: ContainerName, service: Service, response: Response
) -> ContainerStatus:
    """The observed state of one container; its ETag is the hash of the spec it converged to."""
    status = await service.get(name)
    response.headers["ETag"] = _etag(status)
    return status


@v1.get("/containers", tags=["containers"])
async def list_containers(
    service: Service,
    label: Annotated[
        list[str],
        Query(description="Filter: key=value; repeat for several (all must match)."),
    ] = [],  # noqa: B006 - FastAPI copies query defaults per request
) -> ContainerList:
    """The observed state of every container, optionally filtered by labels."""
    return ContainerList(items=await service.find(_parse_selector(label)))


@v1.delete("/containers/{name}", tags=["containers"])
async def delete_container(name: ContainerName, service: Service) -> dict[str, Any]:
    """Stop and destroy; deleting a container that does not exist succeeds."""
    existed = await service.delete(name)
    return {"name": name, "deleted": existed}


@v1.post("/containers/{name}/exec", tags=["containers"])
async def exec_in_container(
    name: ContainerName, request: ExecRequest, service: Service
) -> ExecResult:
    """Run an argv inside the container (never through a host shell)."""
    return await service.exec(name, request)


async def _unauthorized(_: HTTPConnection, __: Exception) -> JSONResponse:
    return _error(401, "Unauthorized", "a valid 'Authorization: Bearer <token>' is required")


async def _malformed_header(_: HTTPConnection, exc: Exception) -> JSONResponse:
    return _error(400, "MalformedHeader", str(exc))


def _method(connection: HTTPConnection) -> str:
    return str(connection.scope.get("method", "WEBSOCKET"))


async def _agent_error(connection: HTTPConnection, exc: Exception) -> JSONResponse:
    # Also before a WebSocket upgrade: the answer is then sent as the denial response.
    assert isinstance(exc, AgentError)
    status = _STATUS.get(type(exc), 500)
    if status >= 500:
        log.error("%s %s failed: %s", _method(connection), connection.url.path, exc.message)
    return _error(status, exc.reason, exc.message)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("%s %s failed unexpectedly", request.method, request.url.path, exc_info=exc)
    return _error(500, "InternalError", f"{type(exc).__name__}: {exc}")


async def _invalid_request(request: HTTPConnection, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError | WebSocketRequestValidationError)
    content_type = request.headers.get("content-type", "")
    if content_type and "json" not in content_type:
        return _error(
            415,
            "UnsupportedMediaType",
            f"send the body as application/json, not {content_type.split(';')[0]}",
        )
    errors = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
        for e in exc.errors()
    ]
    if any(e["type"] == "json_invalid" for e in errors):
        return _error(400, "MalformedJSON", "the request body is not valid JSON", errors)
    summary = "; ".join(
        f"{'.'.join(str(p) for p in e['loc'][1:]) or e['loc'][0]}: {e['msg']}" for e in errors
    )
    return _error(422, "InvalidRequest", summary, errors)


def create_app(
    service: ContainerService | None,
    tokens: TokenFile,
    burst_poll_seconds: float = 0.25,
    sessions: SessionTable | None = None,
    files: ContainerFiles | None = None,
    certificate: ServingCertificate | None = None,
) -> FastAPI:
    """The agent's ASGI app over `service`, its sessions and its files; every route but
    /healthz needs one of `tokens`. With `certificate`, its files are watched and loaded
    again when they change.

    Without a service the app can only describe itself (its OpenAPI schema).
    """

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if service is None:
            yield
            return
        await service.recover()
        if sessions is not None:
            service.stop_hooks.append(sessions.end_container)
        watchers = [asyncio.create_task(service.watch_bursts(burst_poll_seconds))]
        if certificate is not None:
            watchers.append(asyncio.create_task(certificate.watch()))
        try:
            yield
        finally:
            for watcher in watchers:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            if sessions is not None:
                await sessions.close()  # nothing the agent started outlives it

    app = FastAPI(
        title="tuxio node agent",
        version=__version__,
        description="Converges unprivileged LXC containers on one host to a desired spec.",
        lifespan=lifespan,
        # The schema is served below behind the token like every route but /healthz.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service
    app.state.sessions = sessions
    app.state.files = files
    app.state.tokens = tokens
    app.add_exception_handler(Unauthorized, _unauthorized)
    app.add_exception_handler(AgentError, _agent_error)
    app.add_exception_handler(MalformedHeader, _malformed_header)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(WebSocketRequestValidationError, _invalid_request)
    app.add_exception_handler(Exception, _unexpected)
    # Every HTTP request timed by route template and status code (tuxio_agent_request_...).
    app.add_middleware(RequestMetrics)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """Liveness: answers without authentication."""
        return {"status": "ok"}

    @app.get("/openapi.json", include_in_schema=False, dependencies=Authenticated)
    async def openapi() -> dict[str, Any]:
        return app.openapi()

    app.include_router(v1)
    app.include_router(streams_router, prefix="/v1", responses=_ERRORS)
    app.include_router(files_router, prefix="/v1", dependencies=Authenticated, responses=_ERRORS)
    return app


def openapi_document() -> dict[str, Any]:
    """The agent's OpenAPI schema, as served at /openapi.json."""
    return create_app(None, TokenFile.of()).openapi()

"""What the routes depend on: the token check (HTTP and WebSocket), the path parameters, and
the agent's parts, as typed aliases so that routes read plainly.

No `from __future__ import annotations` here: FastAPI reads these annotations at run time.
"""

from typing import Annotated

from fastapi import Depends, Path, Request, WebSocket
from fastapi.requests import HTTPConnection
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .credentials import TokenFile
from .files import ContainerFiles
from .models import NAME_PATTERN
from .service import ContainerService
from .terminals import SessionTable

__all__ = [
    "Authenticated",
    "ContainerName",
    "Files",
    "Service",
    "Sessions",
    "Unauthorized",
    "WebSocketAuthenticated",
]


class Unauthorized(Exception):
    """No valid bearer token (answered with 401)."""


ContainerName = Annotated[
    str,
    Path(
        min_length=1,
        max_length=63,
        pattern=NAME_PATTERN,
        description="Container name: a DNS-1123 label of at most 63 characters.",
    ),
]

_bearer = HTTPBearer(auto_error=False, description="The agent's token.")


def _check(given: bytes, tokens: TokenFile) -> None:
    # Constant-time comparison (TokenFile.accepts): the answer must not leak how much of a
    # guess was right. The file is read again when it changes: a rotated token needs no restart.
    if not tokens.accepts(given):
        raise Unauthorized


async def _require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    # async: FastAPI runs plain functions in a thread pool, a hand-off per request.
    _check(credentials.credentials.encode() if credentials else b"", request.app.state.tokens)


async def _require_token_ws(websocket: WebSocket) -> None:
    """The same check before a WebSocket upgrade (a 401 answer, not a close)."""
    scheme, _, credentials = websocket.headers.get("authorization", "").partition(" ")
    given = credentials.strip().encode() if scheme.lower() == "bearer" else b""
    _check(given, websocket.app.state.tokens)


Authenticated = [Depends(_require_token)]
WebSocketAuthenticated = [Depends(_require_token_ws)]


# HTTPConnection: the same dependency serves HTTP routes and WebSocket routes.
async def _service(connection: HTTPConnection) -> ContainerService:
    service: ContainerService = connection.app.state.service
    return service


async def _sessions(connection: HTTPConnection) -> SessionTable:
    sessions: SessionTable = connection.app.state.sessions
    return sessions


async def _files(connection: HTTPConnection) -> ContainerFiles:
    files: ContainerFiles = connection.app.state.files
    return files


Service = Annotated[ContainerService, Depends(_service)]
Sessions = Annotated[SessionTable, Depends(_sessions)]
Files = Annotated[ContainerFiles, Depends(_files)]

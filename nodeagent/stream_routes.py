"""Routes of the streams: exec and terminals over one WebSocket, and the terminal sessions.

`GET /v1/containers/{name}/exec` speaks the Kubernetes remote-command protocol (docs/protocol.md).
Every refusal happens before the upgrade, as an HTTP answer with the agent's JSON error body
(the WebSocket denial response); after the upgrade the connection belongs to the session.

No `from __future__ import annotations` here: FastAPI reads these annotations at run time.
"""

import contextlib
import logging
from typing import Annotated

from fastapi import APIRouter, Path, WebSocket, WebSocketDisconnect

from tuxio.common import remotecommand as rc

from .deps import Authenticated, ContainerName, Files, Service, Sessions, WebSocketAuthenticated
from .errors import InvalidExecRequest, NoAcceptableSubprotocol, UpgradeRequired
from .models import SessionInfo, SessionList
from .processes import InitProcess
from .streams import PeerGone, serve
from .terminals import Session, SessionTable

__all__ = ["streams_router"]

log = logging.getLogger(__name__)

# What a terminal's command finds in its environment unless the client says otherwise.
_TERMINAL_ENV = {"TERM": "xterm-256color", "LANG": "C.UTF-8"}

SessionId = Annotated[
    str,
    Path(pattern=rc.SESSION_ID_PATTERN, description="Session id (8 to 128 of A-Z a-z 0-9 - _)."),
]

streams_router = APIRouter(tags=["streams"])


@streams_router.websocket("/containers/{name}/exec", dependencies=WebSocketAuthenticated)
async def exec_stream(
    websocket: WebSocket, name: ContainerName, service: Service, sessions: Sessions, files: Files
) -> None:
    """Exec or terminal over one WebSocket (v5.channel.k8s.io, v4.channel.k8s.io)."""
    protocol = rc.select_subprotocol(websocket.scope.get("subprotocols", []))
    if protocol is None:
        raise NoAcceptableSubprotocol(
            "offer v5.channel.k8s.io or v4.channel.k8s.io in Sec-WebSocket-Protocol"
        )
    try:
        options = rc.parse_exec_query(websocket.query_params.multi_items())
    except rc.InvalidExecQuery as exc:
        raise InvalidExecRequest(str(exc)) from None
    init = await service.running_init(name)
    session, created = _open(sessions, files, name, init, options)
    headers = []
    if options.tty:
        state = b"created" if created else b"resumed"
        headers = [(b"x-tuxio-session", session.id.encode()), (b"x-tuxio-session-state", state)]
    try:
        await websocket.accept(subprotocol=protocol, headers=headers)
    except BaseException:
        if created:
            session.end("the upgrade failed")
        raise
    await serve(session, _WebSocketPeer(websocket), protocol, options.stdout, options.stderr)


def _open(
    sessions: SessionTable, files: Files, name: str, init: InitProcess, options: rc.ExecOptions
) -> tuple[Session, bool]:
    env = dict(options.env)
    if not options.tty:
        streams = (options.stdin, options.stdout, options.stderr)
        return sessions.open_exec(name, options.command, env, streams), True
    existing = sessions.get(name, options.session) if options.session else None
    if existing is not None and existing.tty:
        return existing, False
    command = options.command or files.login_shell(init)
    return sessions.open_terminal(name, options.session, command, {**_TERMINAL_ENV, **env})


# The query the upgrade takes, documented on the plain GET (OpenAPI has no WebSocket); the
# mark tells the fuzzer (tests/fuzzing.py) to send the route upgrades too.
_UPGRADE = {"x-websocket": True, "parameters": rc.exec_query_parameters()}


@streams_router.get("/containers/{name}/exec", dependencies=Authenticated, openapi_extra=_UPGRADE)
async def exec_needs_upgrade(name: ContainerName) -> None:
    """Exec and terminals are WebSocket upgrades of this route (see docs/protocol.md): query
    `command` (repeated), `stdin`, `stdout`, `stderr`, `tty`, `session`, `env` (repeated);
    subprotocol v5.channel.k8s.io or v4.channel.k8s.io. A plain GET gets 400."""
    raise UpgradeRequired("this route takes a WebSocket upgrade (Upgrade: websocket)")


@streams_router.get("/containers/{name}/sessions", dependencies=Authenticated)
async def list_sessions(name: ContainerName, service: Service, sessions: Sessions) -> SessionList:
    """The container's terminal sessions."""
    service.require(name)
    return SessionList(items=sessions.terminals(name))


@streams_router.delete("/containers/{name}/sessions/{session}", dependencies=Authenticated)
async def end_session(name: ContainerName, session: SessionId, sessions: Sessions) -> SessionInfo:
    """Hang up the session's command, then kill what is left of it; answers its last state."""
    return await sessions.end(name, session)


class _WebSocketPeer:
    """The Peer of streams.serve over a Starlette WebSocket."""

    __slots__ = ("_websocket",)

    def __init__(self, websocket: WebSocket) -> None:
        self._websocket = websocket

    async def send(self, message: bytes) -> None:
        try:
            await self._websocket.send_bytes(message)
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            raise PeerGone from exc

    async def receive(self) -> bytes | None:
        try:
            message = await self._websocket.receive()
        except (RuntimeError, OSError):
            return None
        if message["type"] != "websocket.receive":
            return None
        data = message.get("bytes")
        if data is not None:
            return bytes(data)
        return str(message.get("text") or "").encode()

    async def close(self, code: int, reason: str = "") -> None:
        with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
            await self._websocket.close(code, reason)

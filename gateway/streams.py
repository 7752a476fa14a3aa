"""What both front doors do once a caller is let in: find the Sandbox's agent, open the stream
or the files request there, and relay it.

The query of an exec or terminal request is checked and passed on as the kubelet's exec takes
it (CONTRACT.md, "Agent: streams"); a terminal is an exec with a TTY. The WebSocket subprotocol
is the agent's choice among the client's offers of `v5.channel.k8s.io` and `v4.channel.k8s.io`:
the agent is asked first, and the client's upgrade is answered only once the agent has said
yes, so that every refusal (the agent's included) is an HTTP error before any upgrade.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

from aiohttp import web
from multidict import MultiMapping

from tuxio.common.remotecommand import (
    SESSION_ID_PATTERN,
    SUBPROTOCOLS,
    InvalidExecQuery,
    parse_exec_query,
)

from .agents import Agents, AgentTarget
from .directory import Directory, SandboxRoute, sandbox_route
from .errors import AgentUnreachable, BadRequest, NotFound, SandboxNotRunning
from .kube import Kube, KubeError, KubeNotFound
from .metrics import OPEN_STREAMS, STREAMS
from .relay import relay

__all__ = [
    "SUBPROTOCOLS",
    "Sandboxes",
    "StreamKind",
    "close_streams",
    "exec_query",
    "files_query",
    "forward_files",
    "offered_subprotocols",
    "serve_stream",
]

log = logging.getLogger(__name__)

StreamKind = Literal["exec", "terminal"]

_TERMINAL_PARAMS = frozenset({"command", "session", "env"})
_FILES_PARAMS = frozenset({"path", "mode"})
# Headers of an agent's files answer that the caller gets too.
_FILES_ANSWER_HEADERS = ("Content-Type", "Content-Length", "X-File-Mode")
# Headers of the agent's 101 that the caller gets too: the terminal session's id and state.
_SESSION_HEADERS = ("X-Tuxio-Session", "X-Tuxio-Session-State")


def _checked(params: MultiMapping[str], allowed: frozenset[str]) -> list[tuple[str, str]]:
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise BadRequest(
            f"unknown query parameter(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )
    return [(key, value) for key, value in params.items()]


def exec_query(kind: StreamKind, params: MultiMapping[str]) -> list[tuple[str, str]]:
    """The agent's query for an exec (as given) or a terminal (stdin, stdout and a TTY),
    checked by the rules the agent applies (so that a bad one is refused here, in the same
    words, without a connection to the agent)."""
    if kind == "exec":
        query = [(key, value) for key, value in params.items() if key != "container"]
    else:
        tty = [("tty", "true"), ("stdin", "true"), ("stdout", "true"), ("stderr", "false")]
        query = [*tty, *_checked(params, _TERMINAL_PARAMS)]
    try:
        parse_exec_query(query)
    except InvalidExecQuery as exc:
        raise BadRequest(str(exc)) from None
    return query


def files_query(params: MultiMapping[str]) -> list[tuple[str, str]]:
    query = _checked(params, _FILES_PARAMS)
    if not params.get("path"):
        raise BadRequest("the query parameter path (an absolute path) is required")
    return query


def session_query(params: MultiMapping[str]) -> str:
    """The terminal session a DELETE names (`?session=<id>`), checked as the agent checks it."""
    _checked(params, frozenset({"session"}))
    session = params.get("session", "")
    if re.match(SESSION_ID_PATTERN, session) is None:
        raise BadRequest(
            "the query parameter session (8 to 128 of A-Z a-z 0-9 - _) names the terminal "
            "session to end"
        )
    return session


async def end_session(
    agents: Agents, target: AgentTarget, session: str, extra_headers: Mapping[str, str] | None
) -> web.Response:
    """End a terminal session on its agent and answer with the agent's answer."""
    status, body = await agents.end_session(target, session)
    response = web.Response(status=status, body=body, headers=extra_headers)
    response.content_type = "application/json"
    return response


def offered_subprotocols(headers: Iterable[str]) -> list[str]:
    """The remote-command versions a client offers (in its order of preference); BadRequest
    without one, as the agent and the kubelet answer."""
    offered = [p.strip() for header in headers for p in header.split(",")]
    found = [p for p in offered if p in SUBPROTOCOLS]
    if not found:
        raise BadRequest(
            f"no supported WebSocket subprotocol: offer one of {', '.join(SUBPROTOCOLS)}"
        )
    return found


class Sandboxes:
    """Sandboxes by name, from the watch (and from the API server when the watch has not seen
    one yet, e.g. a Sandbox created a moment ago), and their agents."""

    def __init__(self, directory: Directory, kube: Kube, agents: Agents) -> None:
        self.directory = directory
        self.kube = kube
        self.agents = agents

    async def route(self, namespace: str, name: str, *, fresh: bool = False) -> SandboxRoute:
        """The Sandbox `namespace/name`; `fresh`: read from the API server, not the watch."""
        found = None if fresh else self.directory.sandbox(namespace, name)
        # Not running as the watch last told: it may have started since (a watch lags), so
        # the API server is asked before the caller is refused.
        if found is not None and found.running:
            return found
        try:
            body = await self.kube.get(
                f"/apis/tux.io/v1alpha1/namespaces/{namespace}/sandboxes/{name}"
            )
        except KubeNotFound:
            raise NotFound(f'sandbox "{name}" not found in namespace "{namespace}"') from None
        except KubeError as exc:
            raise AgentUnreachable(f"reading sandbox {namespace}/{name}: {exc}") from None
        return sandbox_route(body)

    async def target(self, sandbox: SandboxRoute) -> AgentTarget:
        """The agent of a running Sandbox, with its credentials."""
        if not sandbox.running:
            raise SandboxNotRunning(
                f"sandbox {sandbox.namespace}/{sandbox.name} is not running "
                f"(phase {sandbox.phase or 'unknown'})"
            )
        assert sandbox.host is not None
        host = self.directory.host(sandbox.host)
        if host is None:
            raise AgentUnreachable(f"host {sandbox.host} of sandbox {sandbox.name} is not known")
        return await self.agents.target(sandbox, host)


async def serve_stream(
    request: web.Request,
    agents: Agents,
    target: AgentTarget,
    query: Sequence[tuple[str, str]],
    subprotocols: Sequence[str],
    *,
    max_message_bytes: int,
    who: str,
    open_streams: set[web.WebSocketResponse],
) -> web.WebSocketResponse:
    """Open the agent's stream, then answer the client's upgrade with the agent's choice of
    subprotocol and its session headers, and relay until one side closes."""
    agent = await agents.open_stream(target, query, subprotocols)
    try:
        client = web.WebSocketResponse(
            protocols=[agent.subprotocol] if agent.subprotocol else (),
            max_msg_size=max_message_bytes,
            compress=False,
            autoping=True,
        )
        session = ""
        if agent.response is not None:
            for header in _SESSION_HEADERS:
                value = agent.response.headers.get(header)
                if value:
                    client.headers[header] = value
            session = agent.response.headers.get("X-Tuxio-Session", "")
        sandbox = target.sandbox
        await client.prepare(request)
        log.info(
            "stream opened: %s on %s/%s (host %s%s) for %s",
            agent.subprotocol,
            sandbox.namespace,
            sandbox.name,
            target.host.name,
            f", session {session}" if session else "",
            who,
        )
        open_streams.add(client)
        OPEN_STREAMS.inc()
        ended = "error"
        try:
            ended = await relay(client, agent)
        finally:
            open_streams.discard(client)
            OPEN_STREAMS.dec()
            STREAMS.labels(agent.subprotocol or "", ended).inc()
        log.info(
            "stream closed by the %s: %s/%s%s",
            ended,
            sandbox.namespace,
            sandbox.name,
            f", session {session}" if session else "",
        )
        return client
    finally:
        with contextlib.suppress(Exception):
            await agent.close()


async def forward_files(
    request: web.Request,
    agents: Agents,
    target: AgentTarget,
    query: Sequence[tuple[str, str]],
    extra_headers: Mapping[str, str] | None = None,
) -> web.StreamResponse:
    """Forward a files request (GET, PUT, DELETE) and stream the agent's answer back, one
    chunk at a time (each written and drained before the next is read)."""
    headers = {
        name: request.headers[name]
        for name in ("Content-Type", "Content-Length")
        if name in request.headers
    }
    body = request.content if request.method == "PUT" else None
    answer = await agents.files(target, request.method, query, body, headers)
    try:
        response = web.StreamResponse(status=answer.status, headers=extra_headers)
        for name in _FILES_ANSWER_HEADERS:
            if name in answer.headers:
                response.headers[name] = answer.headers[name]
        await response.prepare(request)
        async for chunk in answer.content.iter_chunked(64 * 1024):
            await response.write(chunk)
        await response.write_eof()
        return response
    finally:
        answer.release()


async def close_streams(open_streams: set[web.WebSocketResponse]) -> None:
    """Close every open stream with 1001 (going away): on SIGTERM, before the listeners stop.
    Each relay then closes its agent side with the same code, which detaches a terminal
    (kept by the agent for its grace period) rather than ending it."""
    for client in list(open_streams):
        with contextlib.suppress(Exception):
            await client.close(code=1001, message=b"gateway going away")

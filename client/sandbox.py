"""One Sandbox, as a handle: its state, waiting for it to be Ready, and the ways in (commands,
terminals, files, visitor tokens) through the gateway's subresources, and deleting it.
`async with sandbox:` deletes it on the way out."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .api import (
    ExecResult,
    SandboxState,
    VisitorToken,
    exec_query,
    sandbox_path,
    sandboxes_path,
    state_of,
    subresource_path,
    terminal_query,
    token_of,
    token_request,
)
from .errors import SandboxFailed, SandboxNotFound, SandboxTimeout
from .files import AsyncFiles
from .streams import AsyncTerminal, ExecStream, Stdin, collect
from .transport import Transport

__all__ = ["AsyncSandbox", "wait_for"]


class AsyncSandbox:
    """A Sandbox in the cluster. Its attributes are as last read (`refresh()` reads again)."""

    def __init__(self, transport: Transport, body: Mapping[str, Any]) -> None:
        self._transport = transport
        self._state = state_of(body)
        self.body: Mapping[str, Any] = body
        self.files = AsyncFiles(transport, self._sub("files"))

    def __repr__(self) -> str:
        return f"AsyncSandbox({self.namespace}/{self.name}, phase={self.phase})"

    # ----- state ---------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._state.name

    @property
    def namespace(self) -> str:
        return self._state.namespace

    @property
    def uid(self) -> str:
        return self._state.uid

    @property
    def host(self) -> str | None:
        return self._state.host

    @property
    def phase(self) -> str | None:
        return self._state.phase

    @property
    def ready(self) -> bool:
        return self._state.ready

    @property
    def state(self) -> SandboxState:
        return self._state

    def _update(self, body: Mapping[str, Any]) -> None:
        self.body = body
        self._state = state_of(body)

    def _sub(self, sub: str) -> str:
        return subresource_path(self.namespace, self.name, sub)

    async def refresh(self) -> AsyncSandbox:
        """Read the Sandbox again."""
        self._update(await self._transport.json("GET", sandbox_path(self.namespace, self.name)))
        return self

    async def wait_ready(self, timeout: float = 30.0) -> AsyncSandbox:
        """Until its Ready condition is True (by a watch, so no poll interval adds to it);
        SandboxFailed if it fails or goes, SandboxTimeout after `timeout` seconds."""
        body = await wait_for(self._transport, self.namespace, self.name, _ready, timeout)
        if body is None:
            raise SandboxFailed(
                f"sandbox {self.namespace}/{self.name} was deleted while waiting for Ready",
                reason="Deleted",
            )
        self._update(body)
        return self

    async def delete(self, wait: bool = False, timeout: float = 60.0) -> None:
        """Delete the Sandbox (its container goes with it); `wait`: until it is gone."""
        try:
            await self._transport.json("DELETE", sandbox_path(self.namespace, self.name))
        except SandboxNotFound:
            return
        if wait:
            await wait_for(self._transport, self.namespace, self.name, _never, timeout)

    async def __aenter__(self) -> AsyncSandbox:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.delete()

    # ----- the ways in ---------------------------------------------------------------------

    def exec_stream(
        self,
        command: Sequence[str],
        *,
        stdin: Stdin = None,
        tty: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> ExecStream:
        """Run `command` (an argv, never given to a shell); its output as it comes. `stdin`:
        bytes, or an async iterable of them, sent and then closed."""
        query = exec_query(command, stdin=stdin is not None, tty=tty, env=env)
        path = self._sub("exec")
        return ExecStream(lambda: self._transport.websocket(path, query), stdin)

    async def exec(
        self,
        command: Sequence[str],
        *,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = 60.0,
    ) -> ExecResult:
        """Run `command` to its end: its exit code, stdout and stderr."""
        return await collect(self.exec_stream(command, stdin=stdin, env=env), timeout)

    async def terminal(
        self,
        cols: int = 80,
        rows: int = 24,
        *,
        session: str | None = None,
        command: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> AsyncTerminal:
        """A terminal running `command` (the login shell if none), `cols` by `rows`. With the
        `session` of an earlier terminal: that session, resumed (its screen replayed)."""
        session_id = session or uuid.uuid4().hex
        path = self._sub("terminal")
        ws = await self._transport.websocket(
            path, terminal_query(session_id, command, env), timeout=timeout
        )
        headers = ws.response.headers if ws.response is not None else {}
        terminal = AsyncTerminal(
            ws,
            headers.get("X-Tuxio-Session", session_id),
            headers.get("X-Tuxio-Session-State", "created"),
            lambda: self.end_session(session_id),
        )
        await terminal.resize(cols, rows)
        return terminal

    async def end_session(self, session: str) -> None:
        """End a terminal session (hang-up, kill); an unknown or ended one is no error."""
        try:
            response = await self._transport.request(
                "DELETE", self._sub("terminal"), query=[("session", session)]
            )
        except SandboxNotFound:
            return
        response.release()

    async def token(
        self, scopes: Sequence[str] = ("terminal",), seconds: int | None = None
    ) -> VisitorToken:
        """A visitor token for this Sandbox with `scopes`, valid `seconds` (the gateway's
        default when None), for a browser to open the gateway's visitor endpoint with."""
        answer = await self._transport.json(
            "POST", self._sub("token"), body=token_request(scopes, seconds)
        )
        return token_of(answer)


def _ready(body: Mapping[str, Any]) -> bool:
    state = state_of(body)
    if state.phase == "Failed":
        raise SandboxFailed(
            f"sandbox {state.namespace}/{state.name} failed: {state.message}", reason="Failed"
        )
    return state.ready and not state.deleting


def _never(body: Mapping[str, Any]) -> bool:
    return False


async def wait_for(
    transport: Transport,
    namespace: str,
    name: str,
    done: Callable[[Mapping[str, Any]], bool],
    timeout: float,
) -> dict[str, Any] | None:
    """The Sandbox once `done(body)` holds, or None once it is gone, watching it (list, then a
    watch from the list's version, again on a watch's end); SandboxTimeout after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Mapping[str, Any] = {}
    selector = [("fieldSelector", f"metadata.name={name}")]
    collection = sandboxes_path(namespace)
    try:
        async with asyncio.timeout(timeout):
            while True:
                listing = await transport.json("GET", collection, query=selector)
                items = listing.get("items") or []
                if not items:
                    return None
                last = items[0]
                if done(last):
                    return dict(last)
                version = str(listing["metadata"]["resourceVersion"])
                remaining = max(1.0, deadline - time.monotonic())
                async for event in transport.watch(collection, selector, version, remaining):
                    kind, body = event.get("type"), event.get("object") or {}
                    if kind == "DELETED":
                        return None
                    if kind == "ERROR":
                        break  # too old (410): list again
                    if kind in ("ADDED", "MODIFIED"):
                        last = body
                        if done(body):
                            return dict(body)
    except TimeoutError:
        state = state_of(last)
        raise SandboxTimeout(
            f"sandbox {namespace}/{name}: not there within {timeout} s (phase "
            f"{state.phase or 'unknown'}{': ' + state.message if state.message else ''})",
            reason="Timeout",
        ) from None

"""A small remote-command client for the tests (the product client is tuxio.client).

Tests open streams through the `streams` fixture (Streams), which closes them at the end.

It speaks the wire format through tuxio.common.remotecommand over the `websockets` library,
collects what arrives per channel in a background task, and lets a test wait on what it
expects to see. `reading` can be switched off to play a client that does not read.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support import Agent
from tuxio.common import remotecommand as rc

DEADLINE = 60.0  # generous: the machine may be busy with other engineers' tests


@dataclass
class Denied:
    """An upgrade the agent refused: its HTTP status and JSON body."""

    status: int
    body: dict[str, Any]


@dataclass
class Stream:
    """One exec or terminal connection."""

    ws: ClientConnection
    protocol: str
    session: str | None
    state: str | None
    frames: list[rc.Frame] = field(default_factory=list)
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    status: bytes | None = None
    close_code: int | None = None
    received: int = 0  # stdout bytes, all told (stdout itself may be trimmed by a test)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    reading: asyncio.Event = field(default_factory=asyncio.Event)
    _reader: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.reading.set()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                await self.reading.wait()
                message = await self.ws.recv()
                data = message if isinstance(message, bytes) else message.encode()
                frame = rc.decode_frame(data)
                if frame is None:
                    continue
                self.frames.append(frame)
                if frame.channel == rc.STDOUT:
                    self.stdout += frame.data
                    self.received += len(frame.data)
                elif frame.channel == rc.STDERR:
                    self.stderr += frame.data
                elif frame.channel == rc.ERROR and frame.data:
                    self.status = frame.data
                self.changed.set()
        except ConnectionClosed as closed:
            self.close_code = closed.rcvd.code if closed.rcvd else 1006
            self.changed.set()

    async def wait_for(self, condition: Callable[[], object], timeout: float = DEADLINE) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                self.changed.clear()
                await self.changed.wait()

    def mark(self) -> int:
        """Where stdout ends now (for expect's `since`)."""
        return len(self.stdout)

    async def expect(
        self, pattern: str | bytes, since: int = 0, timeout: float = DEADLINE
    ) -> re.Match[bytes]:
        """Wait until stdout (from `since` on) matches `pattern`, a regular expression."""
        compiled = re.compile(pattern.encode() if isinstance(pattern, str) else pattern)
        found: list[re.Match[bytes]] = []

        def matched() -> bool:
            match = compiled.search(self.stdout, since)
            if match:
                found.append(match)
            return match is not None

        try:
            await self.wait_for(matched, timeout)
        except TimeoutError:
            raise AssertionError(
                f"{pattern!r} not seen within {timeout}s; stdout ends with "
                f"{bytes(self.stdout[-400:])!r}"
            ) from None
        return found[0]

    async def exit_status(self, timeout: float = DEADLINE) -> rc.ExitStatus:
        await self.wait_for(lambda: self.status is not None or self.close_code, timeout)
        assert self.status is not None, f"closed ({self.close_code}) without a status"
        return rc.parse_status(self.status)

    async def closed(self, timeout: float = DEADLINE) -> int:
        await self.wait_for(lambda: self.close_code is not None, timeout)
        assert self.close_code is not None
        return self.close_code

    async def send(self, data: bytes | str) -> None:
        await self.ws.send(
            rc.data_frame(rc.STDIN, data.encode() if isinstance(data, str) else data)
        )

    async def close_stdin(self) -> None:
        await self.ws.send(rc.close_frame(rc.STDIN))

    async def resize(self, width: int, height: int) -> None:
        await self.ws.send(rc.resize_frame(width, height))

    def status_json(self) -> dict[str, Any]:
        assert self.status is not None
        parsed: dict[str, Any] = json.loads(self.status)
        return parsed

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader

    async def drop(self) -> None:
        """Go away without a closing handshake, as a client whose network failed."""
        self.ws.transport.abort()
        await self.aclose()


def exec_url(agent: Agent, container: str, params: list[tuple[str, str]]) -> str:
    base = agent.url.replace("http", "ws", 1)
    return f"{base}/v1/containers/{container}/exec?{urlencode(params)}"


async def try_open(
    agent: Agent,
    container: str,
    params: list[tuple[str, str]],
    protocols: tuple[str, ...] = rc.SUBPROTOCOLS,
    token: str | None = None,
    max_queue: int = 16,
) -> Stream | Denied:
    """Connect and start collecting, or what the agent answered when it refused."""
    headers = {"Authorization": f"Bearer {agent.token if token is None else token}"}
    try:
        ws = await connect(
            exec_url(agent, container, params),
            subprotocols=[websockets.Subprotocol(p) for p in protocols] or None,
            additional_headers=headers,
            compression=None,
            max_size=None,
            max_queue=max_queue,
            open_timeout=DEADLINE,
            # No keepalive of the client's own: a test playing a client that reads nothing
            # stops reading pongs too, and a slow machine held it so past the ping timeout
            # that the client closed its own connection (found by make test-slow).
            ping_interval=None,
            proxy=None,
        )
    except InvalidStatus as refused:
        response = refused.response
        return Denied(response.status_code, json.loads(response.body or b"{}"))
    response = ws.response
    assert response is not None
    stream = Stream(
        ws,
        ws.subprotocol or "",
        response.headers.get("X-Tuxio-Session"),
        response.headers.get("X-Tuxio-Session-State"),
    )
    stream.start()
    return stream


def terminal(command: list[str] | None = None, session: str | None = None) -> list[tuple[str, str]]:
    params = [("tty", "true"), ("stdin", "true"), ("stdout", "true")]
    params += [("command", arg) for arg in command or []]
    if session is not None:
        params.append(("session", session))
    return params


def piped(command: list[str], stdin: bool = False) -> list[tuple[str, str]]:
    return [("command", arg) for arg in command] + [("stdin", "true" if stdin else "false")]


async def eventually(
    predicate: Callable[[], object | Awaitable[object]],
    timeout: float = DEADLINE,
    interval: float = 0.05,
    message: Callable[[], object] | None = None,
) -> object:
    """Poll until `predicate` is truthy (without blocking the event loop); its value. On
    failure the last value is shown, or what `message` says."""
    value: object = None
    try:
        async with asyncio.timeout(timeout):
            while True:
                value = predicate()
                if inspect.isawaitable(value):
                    value = await value
                if value:
                    return value
                await asyncio.sleep(interval)
    except TimeoutError:
        seen = message() if message is not None else value
        raise AssertionError(f"condition not met within {timeout}s (last: {seen!r})") from None


class Streams:
    """The streams of one test, closed when it ends (the `streams` fixture)."""

    def __init__(self) -> None:
        self.opened: list[Stream] = []

    async def open(
        self, agent: Agent, container: str, params: list[tuple[str, str]], **options: Any
    ) -> Stream:
        answer = await self.try_open(agent, container, params, **options)
        assert isinstance(answer, Stream), f"refused: {answer}"
        return answer

    async def try_open(
        self, agent: Agent, container: str, params: list[tuple[str, str]], **options: Any
    ) -> Stream | Denied:
        answer = await try_open(agent, container, params, **options)
        if isinstance(answer, Stream):
            self.opened.append(answer)
        return answer

    async def aclose(self) -> None:
        for stream in self.opened:
            await stream.aclose()

"""Commands and terminals over the remote-command WebSocket (`v5.channel.k8s.io`): an exec's
output as it comes (`ExecStream`), or collected (`collect`), and an interactive terminal
(`AsyncTerminal`) whose session outlives its connection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Literal

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tuxio.common.remotecommand import (
    ERROR,
    STDERR,
    STDIN,
    STDOUT,
    V5,
    ExitStatus,
    close_frame,
    data_frame,
    decode_frame,
    parse_status,
    resize_frame,
)

from .api import ExecResult
from .errors import SandboxError, SandboxTimeout

__all__ = ["AsyncTerminal", "Channel", "ExecStream", "collect"]

log = logging.getLogger(__name__)

Channel = Literal["stdout", "stderr"]
Stdin = bytes | AsyncIterable[bytes] | None
Opener = Callable[[], Awaitable[ClientConnection]]
# Frames of stdin at most this large: the agent reads them one at a time.
_CHUNK = 256 * 1024
# The close code the agent ends a connection with when another one took its terminal over.
TAKEN_OVER = 4001


def _status_error(status: ExitStatus) -> SandboxError:
    return SandboxError(status.message or status.reason, reason=status.reason)


async def _feed(ws: ClientConnection, stdin: Stdin) -> None:
    """Send `stdin` on channel 0, then close it (v5; in v4 the command sees no end of input)."""
    if isinstance(stdin, bytes):
        for start in range(0, len(stdin), _CHUNK):
            await ws.send(data_frame(STDIN, stdin[start : start + _CHUNK]))
    elif stdin is not None:
        async for chunk in stdin:
            if chunk:
                await ws.send(data_frame(STDIN, chunk))
    if ws.subprotocol == V5:
        await ws.send(close_frame(STDIN))


class ExecStream:
    """A command's output as it comes: `async for channel, data in stream` yields
    ("stdout" | "stderr", bytes); once the iteration ends, `exit_code` is set. The command
    starts on the first iteration (or on `async with`)."""

    def __init__(self, opener: Opener, stdin: Stdin = None) -> None:
        self._opener = opener
        self._stdin = stdin
        self._ws: ClientConnection | None = None
        self._feeder: asyncio.Task[None] | None = None
        self.exit_code: int | None = None

    async def start(self) -> None:
        if self._ws is None:
            self._ws = await self._opener()
            self._feeder = asyncio.create_task(_feed(self._ws, self._stdin), name="exec stdin")

    async def __aenter__(self) -> ExecStream:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        """End the stream (a command still running is ended by the agent)."""
        if self._feeder is not None:
            self._feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await self._feeder
        if self._ws is not None:
            await self._ws.close()

    def __aiter__(self) -> AsyncIterator[tuple[Channel, bytes]]:
        return self._frames()

    async def _frames(self) -> AsyncIterator[tuple[Channel, bytes]]:
        await self.start()
        assert self._ws is not None
        try:
            async for message in self._ws:
                frame = decode_frame(message if isinstance(message, bytes) else message.encode())
                if frame is None or (not frame.data and frame.channel != ERROR):
                    continue
                if frame.channel == STDOUT:
                    yield "stdout", frame.data
                elif frame.channel == STDERR:
                    yield "stderr", frame.data
                elif frame.channel == ERROR:
                    status = parse_status(frame.data)
                    if status.exit_code is None:
                        raise _status_error(status)
                    self.exit_code = status.exit_code
            if self.exit_code is None:
                raise SandboxError("the connection closed before the command's exit status")
        except ConnectionClosed as exc:
            raise SandboxError(f"the connection was lost: {exc}") from exc
        finally:
            await self.close()


async def collect(stream: ExecStream, timeout: float | None) -> ExecResult:
    """Everything a command writes, and its exit code; SandboxTimeout after `timeout`."""
    out, err = bytearray(), bytearray()
    try:
        async with asyncio.timeout(timeout):
            async for channel, data in stream:
                (out if channel == "stdout" else err).extend(data)
    except TimeoutError:
        await stream.close()
        raise SandboxTimeout(f"the command did not finish within {timeout} s") from None
    assert stream.exit_code is not None
    return ExecResult(stream.exit_code, bytes(out), bytes(err))


class AsyncTerminal:
    """A terminal (a pty in the sandbox) over one connection. Its session lives on in the
    agent when the connection closes: open another terminal with the same `session_id` to
    resume it (the recent screen is replayed). `kill()` ends the session itself."""

    def __init__(
        self,
        ws: ClientConnection,
        session_id: str,
        state: str,
        killer: Callable[[], Awaitable[None]],
    ) -> None:
        self._ws = ws
        self.session_id = session_id
        self.state = state  # "created" or "resumed"
        self._killer = killer
        self.exit_code: int | None = None
        self.taken_over = False
        self._ended = False

    async def __aenter__(self) -> AsyncTerminal:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    @property
    def ended(self) -> bool:
        """No more output will come (the command exited, or the connection closed)."""
        return self._ended

    async def send(self, data: bytes | str) -> None:
        """Keys for the terminal (`\\r` is Enter, `\\x03` Ctrl-C)."""
        raw = data.encode() if isinstance(data, str) else data
        try:
            for start in range(0, len(raw), _CHUNK):
                await self._ws.send(data_frame(STDIN, raw[start : start + _CHUNK]))
        except ConnectionClosed as exc:
            raise SandboxError(f"the terminal's connection is closed: {exc}") from exc

    async def resize(self, cols: int, rows: int) -> None:
        """The terminal is now `cols` columns by `rows` rows (the command gets SIGWINCH)."""
        try:
            await self._ws.send(resize_frame(cols, rows))
        except ConnectionClosed as exc:
            raise SandboxError(f"the terminal's connection is closed: {exc}") from exc

    async def recv(self, timeout: float | None = None) -> bytes:
        """The next output; b"" once it has ended (then `exit_code` is set if the command
        exited, `taken_over` if another connection took the session over). SandboxTimeout
        when nothing came within `timeout`."""
        while not self._ended:
            try:
                async with asyncio.timeout(timeout):
                    message = await self._ws.recv()
            except TimeoutError:
                raise SandboxTimeout(f"no terminal output within {timeout} s") from None
            except ConnectionClosed as exc:
                self._ended = True
                self.taken_over = exc.rcvd is not None and exc.rcvd.code == TAKEN_OVER
                return b""
            frame = decode_frame(message if isinstance(message, bytes) else message.encode())
            if frame is None:
                continue
            if frame.channel == STDOUT and frame.data:
                return frame.data
            if frame.channel == ERROR:
                self.exit_code = parse_status(frame.data).exit_code
        return b""

    async def read_until(self, needle: bytes, timeout: float | None = None) -> bytes:
        """Output until `needle` shows (all of it); SandboxTimeout after `timeout`, or
        SandboxError if the terminal ends first."""
        seen = bytearray()
        try:
            async with asyncio.timeout(timeout):
                while needle not in seen:
                    data = await self.recv()
                    if not data:
                        raise SandboxError(f"the terminal ended before {needle!r} showed")
                    seen += data
        except TimeoutError:
            raise SandboxTimeout(
                f"{needle!r} did not show within {timeout} s; the terminal showed "
                f"{bytes(seen[-500:])!r}"
            ) from None
        return bytes(seen)

    async def wait(self, timeout: float | None = None) -> int | None:
        """Read (and drop) output until the terminal ends; its exit code."""
        async with asyncio.timeout(timeout):
            while await self.recv():
                pass
        return self.exit_code

    async def close(self) -> None:
        """Close this connection; the session lives on for its grace period."""
        self._ended = True
        await self._ws.close()

    async def kill(self) -> None:
        """End the session (its processes are hung up, then killed) and close."""
        await self._killer()
        await self.close()

"""The local end of `kubectl tuxio shell` and `exec`: this process's terminal put in raw mode
(restored on the way out, whatever happens), its size sent on every SIGWINCH, keys and piped
input forwarded in order, output written as it comes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import termios
import tty
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import BinaryIO

from .sandbox import AsyncSandbox
from .streams import AsyncTerminal

__all__ = ["input_chunks", "raw_mode", "run_exec", "run_shell", "terminal_size"]

_READ = 64 * 1024


def terminal_size(fd: int) -> tuple[int, int]:
    """Columns and rows of the terminal on `fd` (80 by 24 when it is none)."""
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return 80, 24
    return size.columns or 80, size.lines or 24


@contextlib.contextmanager
def raw_mode(fd: int) -> Iterator[None]:
    """The terminal on `fd` in raw mode (every key passed on, no local echo) for the block;
    nothing when `fd` is not a terminal."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setraw(fd, termios.TCSANOW)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def input_chunks(fd: int) -> AsyncIterator[bytes]:
    """What arrives on `fd` until its end: read when the loop says it is readable (a
    terminal, a pipe, a socket), or on a worker thread for what cannot be polled (a file)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes] = asyncio.Queue()

    def readable() -> None:
        try:
            data = os.read(fd, _READ)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
        queue.put_nowait(data)

    try:
        loop.add_reader(fd, readable)
    except PermissionError:  # a regular file: epoll refuses it, and it never blocks long
        while data := await loop.run_in_executor(None, os.read, fd, _READ):
            yield data
        return
    try:
        while data := await queue.get():
            yield data
    finally:
        loop.remove_reader(fd)


def _write(out: BinaryIO, data: bytes) -> None:
    out.write(data)
    out.flush()


async def _forward_keys(terminal: AsyncTerminal, fd: int) -> None:
    async for chunk in input_chunks(fd):
        await terminal.send(chunk)


async def run_shell(
    sandbox: AsyncSandbox,
    *,
    session: str | None = None,
    command: Sequence[str] = (),
    fd_in: int | None = None,
    out: BinaryIO | None = None,
) -> tuple[int | None, AsyncTerminal]:
    """A terminal in `sandbox` on this process's terminal, until it ends; its exit code (None
    when the connection ended first: the session then lives on) and the terminal."""
    fd = sys.stdin.fileno() if fd_in is None else fd_in
    output = sys.stdout.buffer if out is None else out
    cols, rows = terminal_size(fd)
    terminal = await sandbox.terminal(cols, rows, session=session, command=command)
    loop = asyncio.get_running_loop()

    resizes: set[asyncio.Task[None]] = set()

    def resized() -> None:
        task = loop.create_task(terminal.resize(*terminal_size(fd)))
        resizes.add(task)
        task.add_done_callback(resizes.discard)

    loop.add_signal_handler(signal.SIGWINCH, resized)
    keys = asyncio.create_task(_forward_keys(terminal, fd), name="keys")
    try:
        with raw_mode(fd):
            while data := await terminal.recv():
                _write(output, data)
    finally:
        loop.remove_signal_handler(signal.SIGWINCH)
        keys.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await keys
        await terminal.close()
    return terminal.exit_code, terminal


async def run_exec(
    sandbox: AsyncSandbox,
    command: Sequence[str],
    *,
    stdin: bool,
    fd_in: int | None = None,
    out: BinaryIO | None = None,
    err: BinaryIO | None = None,
) -> int:
    """`command` in `sandbox`, this process's stdin piped in (when `stdin`), its stdout and
    stderr written apart as they come; its exit code."""
    fd = sys.stdin.fileno() if fd_in is None else fd_in
    stdout = sys.stdout.buffer if out is None else out
    stderr = sys.stderr.buffer if err is None else err
    stream = sandbox.exec_stream(command, stdin=input_chunks(fd) if stdin else None)
    async for channel, data in stream:
        _write(stdout if channel == "stdout" else stderr, data)
    assert stream.exit_code is not None
    return stream.exit_code

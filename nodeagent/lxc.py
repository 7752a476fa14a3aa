"""The LXC adapter: the lxc-* tools, run with argv lists, never through a shell.

Everything here reports what LXC says; deciding what to do with it is the service's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import LxcCommandFailed

__all__ = ["AttachResult", "Lxc", "LxcInfo"]

log = logging.getLogger(__name__)

# What a command inside a container sees, whatever the agent's own environment holds.
_BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "TERM": "dumb",
    "LANG": "C.UTF-8",
}


@dataclass(frozen=True)
class LxcInfo:
    """State and init PID of a container as LXC reports them."""

    state: str  # lower case: running, stopped, starting, ...
    pid: int | None


@dataclass(frozen=True)
class AttachResult:
    exit_code: int | None
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool
    timed_out: bool
    duration_seconds: float


@dataclass(frozen=True)
class _Run:
    returncode: int
    stdout: str
    stderr: str


class Lxc:
    """The lxc tools for one LXC path (the directory holding the containers)."""

    def __init__(self, lxcpath: Path, command_timeout: float = 60.0) -> None:
        self.lxcpath = lxcpath
        self.command_timeout = command_timeout

    async def _run(self, *argv: str, check: bool = True) -> _Run:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self.command_timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise LxcCommandFailed(
                f"{argv[0]} did not finish within {self.command_timeout:.0f}s"
            ) from None
        result = _Run(
            proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")
        )
        if check and result.returncode != 0:
            raise LxcCommandFailed(
                f"{argv[0]} {argv[4] if len(argv) > 4 else ''} failed ({result.returncode}): "
                f"{result.stderr.strip() or result.stdout.strip()}"
            )
        return result

    def _base(self, tool: str, name: str) -> list[str]:
        return [tool, "-P", str(self.lxcpath), "-n", name]

    async def info(self, name: str) -> LxcInfo | None:
        """State and PID, or None when LXC does not know the container."""
        result = await self._run(*self._base("lxc-info", name), "-s", "-p", check=False)
        if result.returncode != 0:
            if "doesn't exist" in result.stderr or "does not exist" in result.stderr:
                return None
            raise LxcCommandFailed(f"lxc-info {name} failed: {result.stderr.strip()}")
        return _parse_info(result.stdout)

    async def list_all(self) -> dict[str, LxcInfo]:
        """Every container under the LXC path, with its state and PID, in one call."""
        result = await self._run("lxc-ls", "-P", str(self.lxcpath), "-f", "-F", "NAME,STATE,PID")
        infos: dict[str, LxcInfo] = {}
        for line in result.stdout.splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 2:
                pid = int(fields[2]) if len(fields) > 2 and fields[2].isdigit() else None
                infos[fields[0]] = LxcInfo(fields[1].lower(), pid)
        return infos

    async def start(self, name: str) -> int | None:
        """Start in the background; lxc-start returns once the container runs or failed.

        Returns the PID of the container's init as LXC's own process tree tells it: lxc-start
        writes its monitor's PID to the pid file, and the monitor's one child is the init
        (None if that cannot be read: ask lxc-info). Spares an lxc-info per start."""
        pidfile = self.lxcpath / name / "lxc-start.pid"
        await self._run(*self._base("lxc-start", name), "-d", "-p", str(pidfile))
        return _init_of(pidfile)

    async def stop(self, name: str, timeout: int = 5) -> None:
        """Ask init to halt, and kill it after `timeout` seconds."""
        await self._run(*self._base("lxc-stop", name), "-t", str(timeout))

    async def destroy(self, name: str) -> None:
        """Stop (by force) and remove a container with its overlay."""
        await self._run(*self._base("lxc-destroy", name), "-f")

    async def attach(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        stdin: bytes | None,
        timeout: float,
        max_output: int,
    ) -> AttachResult:
        """Run argv inside the container with a clean environment, an output cap and a timeout.

        On timeout the attached process and its descendants are killed: lxc-attach does not
        pass a kill on to the process it started.
        """
        command = [*self._base("lxc-attach", name), "--clear-env"]
        for key, value in {**_BASE_ENV, **env}.items():
            command += ["-v", f"{key}={value}"]
        command += ["--", *argv]
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        assert proc.stdout is not None
        assert proc.stderr is not None
        out, err = _Capped(max_output), _Capped(max_output)

        async def feed() -> None:
            if stdin is not None and proc.stdin is not None:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    proc.stdin.write(stdin)
                    await proc.stdin.drain()
                proc.stdin.close()

        timed_out = False
        try:
            await asyncio.wait_for(
                asyncio.gather(feed(), out.drain(proc.stdout), err.drain(proc.stderr), proc.wait()),
                timeout,
            )
        except TimeoutError:
            timed_out = True
            _kill_tree(proc.pid)
            await proc.wait()
        duration = time.monotonic() - started
        return AttachResult(
            exit_code=None if timed_out else proc.returncode,
            stdout=bytes(out.data),
            stderr=bytes(err.data),
            stdout_truncated=out.truncated,
            stderr_truncated=err.truncated,
            timed_out=timed_out,
            duration_seconds=duration,
        )


class _Capped:
    """Keeps the first `cap` bytes of a stream and reads (and drops) the rest."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.data = bytearray()
        self.truncated = False

    async def drain(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(65536):
            room = self.cap - len(self.data)
            if len(chunk) > room:
                self.truncated = True
                chunk = chunk[: max(room, 0)]
            self.data += chunk


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                kids += [int(x) for x in (task / "children").read_text().split()]
    except OSError:
        pass
    return kids


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants, leaves first seen top-down."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += _children(current)
    for member in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, signal.SIGKILL)
    log.info("exec timed out: killed %d processes", len(tree))


def _parse_info(text: str) -> LxcInfo:
    state, pid = "stopped", None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "State":
            state = value.strip().lower()
        elif key.strip() == "PID":
            pid = int(value.strip())
    return LxcInfo(state, pid)


def _init_of(pidfile: Path) -> int | None:
    """The one child of the LXC monitor whose PID lxc-start wrote: the container's init."""
    try:
        monitor = int(pidfile.read_text().split()[0])
        children = Path(f"/proc/{monitor}/task/{monitor}/children").read_text().split()
    except (OSError, ValueError, IndexError):
        return None
    return int(children[0]) if len(children) == 1 else None

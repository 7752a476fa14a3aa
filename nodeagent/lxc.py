"""The LXC adapter: the lxc-* tools, run with argv lists, never through a shell.

Everything here reports what LXC says; deciding what to do with it is the service's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import struct
import subprocess
import termios
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .errors import LxcCommandFailed
from .processes import AttachedTree, end_processes
from .session_cgroups import SessionCgroup

__all__ = [
    "AttachResult",
    "AttachedProcess",
    "Lxc",
    "LxcInfo",
    "remove_cgroup",
    "set_window_size",
    "terminal_setup",
]

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
        self._attach = SealedBinary("lxc-attach")
        # Whether lxc-attach turns ONLCR on for the host pty it runs on (LXC 4.0.10 and later
        # do): assumed until a terminal shows it (learn_terminal).
        self.terminal_adds_cr = True

    def learn_terminal(self, adds_cr: bool) -> None:
        """What a terminal showed once lxc-attach had set it up (see terminal_setup)."""
        if adds_cr != self.terminal_adds_cr:
            log.warning(
                "lxc-attach's terminals %s a CR before each LF, unlike assumed so far",
                "add" if adds_cr else "do not add",
            )
            self.terminal_adds_cr = adds_cr

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
        cgroup: SessionCgroup,
    ) -> AttachResult:
        """Run argv inside the container with a clean environment, an output cap and a timeout,
        in `cgroup` (see session_cgroups).

        When it has exited, or on timeout, whatever it started is killed (all that `cgroup`
        holds): lxc-attach does not pass a kill on to the process it started.
        """
        command = self._attach_argv(name, argv, {**_BASE_ENV, **env})
        started = time.monotonic()
        try:
            # Spawned synchronously: the joiner may move this thread (session_cgroups), and no
            # other coroutine may run on it meanwhile.
            with cgroup.joiner() as join:
                popen = _popen(
                    command,
                    executable=self._attach.path(),
                    stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    new_session=True,
                    preexec=join,
                )
        except BaseException:
            await remove_cgroup(cgroup)
            raise
        process = AttachedProcess(popen, AttachedTree(popen.pid, tuple, cgroup), cgroup)
        loop = asyncio.get_running_loop()
        assert popen.stdout is not None
        assert popen.stderr is not None
        out, err = _Capped(max_output), _Capped(max_output)

        transports: list[asyncio.BaseTransport] = []
        connected: set[int] = set()  # the pipes a transport owns (and closes)

        async def reader(pipe: IO[bytes]) -> asyncio.StreamReader:
            stream = asyncio.StreamReader(limit=2**20)
            transport, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(stream), pipe
            )
            transports.append(transport)
            connected.add(id(pipe))
            return stream

        async def feed() -> None:
            if stdin is None or popen.stdin is None:
                return
            transport, protocol = await loop.connect_write_pipe(_Flow, popen.stdin)
            transports.append(transport)
            connected.add(id(popen.stdin))
            writer = asyncio.StreamWriter(transport, protocol, None, loop)
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                writer.write(stdin)
                await writer.drain()
            writer.close()

        exit_code = process.wait()
        timed_out = False
        try:
            async with asyncio.timeout(timeout):
                stdout, stderr = await reader(popen.stdout), await reader(popen.stderr)
                # Shielded: on timeout the gather is cancelled, and the exit is still awaited.
                await asyncio.gather(
                    feed(), out.drain(stdout), err.drain(stderr), asyncio.shield(exit_code)
                )
        except TimeoutError:
            timed_out = True
        duration = time.monotonic() - started
        killed = await end_processes(process.tree, 0, exit_code)
        if killed:
            log.info("exec %s: killed %d processes", "timed out" if timed_out else "ended", killed)
        code = await exit_code
        for transport in transports:
            transport.close()  # and its pipe
        for pipe in (popen.stdin, popen.stdout, popen.stderr):
            if pipe is not None and not pipe.closed and id(pipe) not in connected:
                pipe.close()
        await remove_cgroup(cgroup)
        return AttachResult(
            exit_code=None if timed_out else code,
            stdout=bytes(out.data),
            stderr=bytes(err.data),
            stdout_truncated=out.truncated,
            stderr_truncated=err.truncated,
            timed_out=timed_out,
            duration_seconds=duration,
        )

    def _attach_argv(self, name: str, argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
        # Started inside the container's cgroups (session_cgroups): lxc-attach must not move
        # the process from there; it applies capabilities, seccomp and the LSM as always.
        command = [*self._base("lxc-attach", name), "--elevated-privileges=CGROUP", "--clear-env"]
        for key, value in env.items():
            command += ["-v", f"{key}={value}"]
        return [*command, "--", *argv]

    def spawn_terminal(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        size: tuple[int, int],
        candidates: Callable[[], Iterable[int]],
        cgroup: SessionCgroup,
    ) -> AttachedProcess:
        """Start argv inside the container on a terminal of its own: lxc-attach runs on a host
        pty (its controlling terminal, in a new session), and so allocates a pty inside the
        container, passes resizes on and returns the command's exit code.

        `size` is (width, height); `candidates` lists the container's processes (see
        AttachedTree); the command runs in `cgroup`. The host pty is raw: the agent is the
        terminal.
        """
        master, slave = os.openpty()
        try:
            _make_raw(slave)
            set_window_size(master, *size)
            # setsid --ctty: a new session whose controlling terminal is stdin. lxc-attach opens
            # /dev/tty as its peer, and SIGWINCH reaches it through it.
            attach = self._attach_argv(name, argv, {**_BASE_ENV, **env})
            with cgroup.joiner() as join:
                popen = _popen(
                    ["setsid", "--ctty", self._attach.path(), *attach[1:]],
                    stdin=slave,
                    stdout=slave,
                    stderr=slave,
                    new_session=False,
                    preexec=join,
                )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        return AttachedProcess(
            popen, AttachedTree(popen.pid, candidates, cgroup), cgroup, terminal=master
        )

    def spawn_piped(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        streams: tuple[bool, bool, bool],
        candidates: Callable[[], Iterable[int]],
        cgroup: SessionCgroup,
    ) -> AttachedProcess:
        """Start argv inside the container with pipes for the streams asked for, (stdin,
        stdout, stderr); the others are /dev/null. lxc-attach passes its own descriptors on to
        the command, so the pipes reach it directly."""
        stdin, stdout, stderr = streams
        with cgroup.joiner() as join:
            popen = _popen(
                self._attach_argv(name, argv, {**_BASE_ENV, **env}),
                executable=self._attach.path(),
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
                stderr=subprocess.PIPE if stderr else subprocess.DEVNULL,
                new_session=True,
                preexec=join,
            )
        pipes = [popen.stdin, popen.stdout, popen.stderr]
        fds = [os.dup(p.fileno()) if p is not None else None for p in pipes]
        for pipe in pipes:
            if pipe is not None:
                pipe.close()
        for fd in fds:
            if fd is not None:
                os.set_blocking(fd, False)
        return AttachedProcess(
            popen,
            AttachedTree(popen.pid, candidates, cgroup),
            cgroup,
            stdin=fds[0],
            stdout=fds[1],
            stderr=fds[2],
        )


class SealedBinary:
    """One sealed in-memory copy of a host binary, executed by every process started from it.

    lxc-attach guards against CVE-2019-5736 (a container overwriting the host binary through
    /proc/self/exe) by copying itself into a sealed memfd and re-executing from that, unless
    it already runs from one sealed so: about 1 MiB of memory for each lxc-attach, most of
    what an idle terminal costs. The agent makes that copy once, sealed exactly as LXC seals
    it, and starts every lxc-attach from it: the same guard (no write reaches a sealed memfd),
    the pages shared by all. Started through /proc/<agent>/fd/N, nothing is inherited. A
    changed binary on disk (an upgrade) is copied anew; without memfds the path is used."""

    _SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE

    def __init__(self, name: str) -> None:
        self.name = name
        self._fd: int | None = None
        self._identity: tuple[int, int, int, int] | None = None

    def path(self) -> str:
        source = shutil.which(self.name)
        if source is None:
            return self.name
        try:
            info = os.stat(source)
            identity = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
            if identity != self._identity:
                self._copy(source)
                self._identity = identity
        except OSError as exc:
            log.warning("cannot keep a sealed copy of %s (%s): LXC makes its own", source, exc)
            return source
        return f"/proc/{os.getpid()}/fd/{self._fd}"

    def _copy(self, source: str) -> None:
        fd = os.memfd_create(self.name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            with open(source, "rb") as binary:
                os.sendfile(fd, binary.fileno(), 0, os.fstat(binary.fileno()).st_size)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, self._SEALS)
        except BaseException:
            os.close(fd)
            raise
        # Processes started from the old copy keep it mapped; new ones use this one.
        if self._fd is not None:
            os.close(self._fd)
        self._fd = fd


class AttachedProcess:
    """An lxc-attach the agent started, with the host ends of its streams (non-blocking) and a
    pidfd that tells its exit to the event loop: no thread waits for it."""

    __slots__ = (
        "_exit",
        "_pidfd",
        "cgroup",
        "popen",
        "stderr",
        "stdin",
        "stdout",
        "terminal",
        "tree",
    )

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        tree: AttachedTree,
        cgroup: SessionCgroup,
        *,
        terminal: int | None = None,
        stdin: int | None = None,
        stdout: int | None = None,
        stderr: int | None = None,
    ) -> None:
        self.popen = popen
        self.tree = tree
        self.cgroup = cgroup
        self.terminal = terminal
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self._pidfd = os.pidfd_open(popen.pid)
        self._exit: asyncio.Future[int] | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def wait(self) -> asyncio.Future[int]:
        """Resolves to the exit code once lxc-attach has exited and is reaped (a signal N
        counts as 128 + N, as a shell reports it)."""
        if self._exit is None:
            loop = asyncio.get_running_loop()
            self._exit = loop.create_future()
            loop.add_reader(self._pidfd, self._exited, loop)
        return self._exit

    def _exited(self, loop: asyncio.AbstractEventLoop) -> None:
        code = self.popen.poll()
        if code is None:
            return  # not reapable yet
        loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = -1
        assert self._exit is not None
        if not self._exit.done():
            self._exit.set_result(code if code >= 0 else 128 - code)

    def close_streams(self) -> None:
        """Close the host ends: a hang-up for a terminal, EOF and EPIPE for pipes."""
        for name in ("terminal", "stdin", "stdout", "stderr"):
            fd = getattr(self, name)
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, None)

    async def end(self, hangup_seconds: float) -> int:
        """Hang up and kill everything the command left (see processes.end_processes), then
        reap lxc-attach; returns its exit code."""
        self.tree.note_sessions()  # before the hang-up: its shell, the session leader, goes first
        self.close_streams()
        exit_code = self.wait()
        await end_processes(self.tree, hangup_seconds, exit_code)
        code = await exit_code
        await remove_cgroup(self.cgroup)
        return code


def set_window_size(fd: int, width: int, height: int) -> None:
    """Set a terminal's size (TIOCSWINSZ); on a host pty lxc-attach passes it into the
    container at once (it gets SIGWINCH)."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


def terminal_setup(fd: int) -> bool | None:
    """How lxc-attach has set up the host pty it runs on: None while it has not (it leaves
    the agent's raw settings otherwise: IGNPAR set, output processing on), else whether the
    pty adds a CR before every LF of the output (LXC 5 turns ONLCR on for its peer, which
    the container's own pty has already done once).

    lxc-attach flushes the input pending when it sets the terminal up: input waits for it."""
    try:
        iflag, oflag = termios.tcgetattr(fd)[:2]
    except termios.error:
        return False  # the terminal is gone
    if not (iflag & termios.IGNPAR or oflag):
        return None
    return bool(oflag & termios.OPOST and oflag & termios.ONLCR)


def _make_raw(fd: int) -> None:
    attributes = termios.tcgetattr(fd)
    attributes[0] &= ~(
        termios.BRKINT | termios.ICRNL | termios.INPCK | termios.ISTRIP | termios.IXON
    )
    attributes[1] = 0  # no output processing at all (cfmakeraw leaves ONLCR)
    attributes[2] = (attributes[2] & ~(termios.CSIZE | termios.PARENB)) | termios.CS8
    attributes[3] &= ~(termios.ECHO | termios.ICANON | termios.IEXTEN | termios.ISIG)
    attributes[6][termios.VMIN] = 1
    attributes[6][termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, attributes)


def _popen(
    argv: list[str],
    *,
    stdin: int,
    stdout: int,
    stderr: int,
    new_session: bool,
    preexec: Callable[[], None] | None,
    executable: str | None = None,
) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(
            argv,
            executable=executable,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            start_new_session=new_session,
            close_fds=True,
            preexec_fn=preexec,
        )
    except OSError as exc:
        raise LxcCommandFailed(f"cannot start {argv[0]}: {exc.strerror}") from exc


async def remove_cgroup(cgroup: SessionCgroup) -> None:
    """Remove an ended command's cgroup. What its kill rounds missed (a process moved in
    from elsewhere at the last moment) is killed first."""
    for _ in range(50):
        if cgroup.remove():
            return
        cgroup.kill()
        await asyncio.sleep(0.02)
    log.warning("cgroup %s still holds processes %s; left in place", cgroup.own, cgroup.pids())


class _Flow(asyncio.StreamReaderProtocol):
    """The protocol a StreamWriter over a write pipe needs for drain() (flow control)."""

    def __init__(self) -> None:
        super().__init__(asyncio.StreamReader())


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

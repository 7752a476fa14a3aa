"""Sessions: one attached command each, its output buffered within bounds, its client swappable.

A Session owns an lxc-attach (a terminal, or pipes without one) and reads its output with
asyncio readers on the host descriptors (no thread per session). Output goes into a bounded
buffer: when it holds `buffer_bytes` not yet sent (or a little while a client is attached,
see `_ATTACHED_READAHEAD`) the session stops reading, the host pty or pipe fills, and the
writer in the container blocks. Sent output is kept up to `replay_bytes` and replayed to a
client that attaches again. A terminal survives its client for `grace_seconds`; a command
without a terminal ends with its connection. Ending means: hang up, then kill everything of
the command, then reap lxc-attach (lxc.AttachedProcess.end).

The SessionTable holds every session of the agent and enforces the caps.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from .budget import OutputBudget
from .errors import SessionNotFound, TooManySessions
from .lxc import AttachedProcess, Lxc, set_window_size, terminal_setup
from .models import SessionInfo
from .output import AddedCrRemover, OutputBuffer
from .session_cgroups import SessionCgroup

__all__ = ["Session", "SessionLimits", "SessionTable"]

log = logging.getLogger(__name__)

STDOUT, STDERR = 1, 2
_READ_BYTES = 65536
# While a client is attached, read only this far ahead of what it has been sent: a flood then
# waits in the container, not in the agent, and Ctrl-C reaches the screen quickly.
_ATTACHED_READAHEAD = 128 * 1024
# What a session may always buffer, whatever the agent's output budget (budget.py): only what
# goes past this counts against it, so an attached terminal never waits on other sessions'.
_BUDGET_FLOOR = _ATTACHED_READAHEAD
# Input queued for the command beyond this: the connection stops reading the client.
STDIN_BACKLOG_BYTES = 256 * 1024
# How often a terminal is checked for lxc-attach having set it up (input waits for that),
# and for how long at most (then input goes anyway).
_TERMINAL_SETUP_POLL = 0.005
_TERMINAL_SETUP_WAIT = 10.0


@dataclass(frozen=True)
class SessionLimits:
    """Caps and timeouts of sessions (AgentSettings carries them)."""

    per_container: int = 16
    per_agent: int = 2048
    idle_seconds: float = 3600.0
    grace_seconds: float = 300.0
    hangup_seconds: float = 2.0
    buffer_bytes: int = 2 * 2**20
    replay_bytes: int = 64 * 2**10


class Attachment:
    """One client connection attached to a session."""

    __slots__ = ("replaced", "wake")

    def __init__(self) -> None:
        self.replaced = False
        self.wake = asyncio.Event()


class Session:
    """One attached command and what is known of it."""

    __slots__ = (
        "_adds_cr",
        "_crlf",
        "_ending",
        "_grace",
        "_held",
        "_idle",
        "_loop",
        "_noted",
        "_paused",
        "_setup_poll",
        "_spawned",
        "_stdin",
        "_stdin_backlog",
        "_stdin_close",
        "_stdin_ready",
        "_stdin_room",
        "_streams",
        "_table",
        "attachment",
        "buffer",
        "command",
        "container",
        "created_at",
        "delivered",
        "exit_code",
        "id",
        "last_activity",
        "process",
        "tty",
    )

    def __init__(
        self,
        table: SessionTable,
        container: str,
        session_id: str,
        command: Sequence[str],
        process: AttachedProcess,
        *,
        tty: bool,
    ) -> None:
        self._table = table
        self._loop = asyncio.get_running_loop()
        self.container = container
        self.id = session_id
        self.command = tuple(command)
        self.tty = tty
        self.process = process
        self.created_at = datetime.now(UTC).replace(microsecond=0)
        self.buffer = OutputBuffer(table.limits.replay_bytes if tty else 0)
        self.attachment: Attachment | None = None
        self.exit_code: int | None = None
        self.delivered = False
        self.last_activity = self._spawned = self._loop.time()
        # Descriptors still read, and the channel each one's output goes to.
        self._streams: dict[int, int] = {}
        self._paused = False
        self._held = 0  # output bytes counted in the table's budget (past _BUDGET_FLOOR)
        self._noted = False
        # The terminal's output passes the host pty's line discipline, where lxc-attach (LXC
        # 4.0.10 and later) turns ONLCR on: a CR added before every LF, taken out again. What
        # lxc-attach does is learnt from its terminals (Lxc.terminal_adds_cr), and fixed for a
        # session at its first output (None: no output yet). A CR at the end of a read is held
        # back until the next byte is known.
        self._adds_cr: bool | None = None if tty else False
        self._crlf = AddedCrRemover()
        self._setup_poll: asyncio.TimerHandle | None = None
        self._stdin: deque[bytes] = deque()
        self._stdin_backlog = 0
        self._stdin_close = False
        self._stdin_ready = not tty
        self._stdin_room = asyncio.Event()
        self._stdin_room.set()
        self._ending: asyncio.Task[None] | None = None
        self._grace: asyncio.TimerHandle | None = None
        self._idle: asyncio.TimerHandle | None = None

    # ----- life ---------------------------------------------------------------------------

    def start(self) -> None:
        process = self.process
        if process.terminal is not None:
            self._streams[process.terminal] = STDOUT
        for fd, channel in ((process.stdout, STDOUT), (process.stderr, STDERR)):
            if fd is not None:
                self._streams[fd] = channel
        for fd in self._streams:
            self._loop.add_reader(fd, self._read, fd)
        if self.tty:
            self._setup_poll = self._loop.call_later(_TERMINAL_SETUP_POLL, self._check_setup)
        process.wait().add_done_callback(self._exited)
        self._idle = self._loop.call_later(self._table.limits.idle_seconds, self._check_idle)

    @property
    def exited(self) -> bool:
        return self.exit_code is not None

    @property
    def finished(self) -> bool:
        """The command has exited and all its output has been read and taken."""
        return self.exited and not self._streams and self.buffer.pending_bytes == 0

    @property
    def alive(self) -> bool:
        """Counted against the caps: its lxc-attach has not been reaped."""
        return not self.exited

    def info(self) -> SessionInfo:
        return SessionInfo(
            id=self.id,
            command=list(self.command),
            created_at=self.created_at,
            attached=self.attachment is not None,
            exited=self.exited,
            exit_code=self.exit_code,
        )

    def end(self, reason: str) -> asyncio.Task[None]:
        """Hang up and kill the command (once; later calls get the same task)."""
        if self._ending is None:
            self._ending = self._loop.create_task(self._end(reason))
        return self._ending

    async def _end(self, reason: str) -> None:
        log.info("session %s/%s ending: %s", self.container, self.id, reason)
        self._cancel_timers()
        self._stop_reading()
        self._stop_writing()
        code = await self.process.end(self._table.limits.hangup_seconds)
        self.exit_code = code
        self._wake()
        log.info("session %s/%s ended (exit code %d)", self.container, self.id, code)
        if self.attachment is None:
            self._table.remove(self)

    def _exited(self, future: asyncio.Future[int]) -> None:
        self.exit_code = future.result()
        log.info("session %s/%s exited with %d", self.container, self.id, self.exit_code)
        self._drain_after_exit()
        self._wake()

    def _cancel_timers(self) -> None:
        for handle in (self._grace, self._idle, self._setup_poll):
            if handle is not None:
                handle.cancel()
        self._grace = self._idle = self._setup_poll = None

    def _check_idle(self) -> None:
        idle = self._table.limits.idle_seconds
        remaining = self.last_activity + idle - self._loop.time()
        if remaining > 0:
            self._idle = self._loop.call_later(remaining, self._check_idle)
            return
        self._idle = None
        self.end(f"idle for {idle:.0f} s")

    def _arm_grace(self) -> None:
        if self._grace is None:
            self._grace = self._loop.call_later(
                self._table.limits.grace_seconds, self._grace_expired
            )

    def _grace_expired(self) -> None:
        self._grace = None
        if self.attachment is None:
            self.end(f"not resumed within {self._table.limits.grace_seconds:.0f} s")

    def release(self) -> None:
        """Let go of everything on the host (the session leaves the table)."""
        self._cancel_timers()
        self._stop_reading()
        self._stop_writing()
        self.process.close_streams()
        budget = self._table.budget
        budget.forget(self)
        held, self._held = self._held, 0
        budget.give(held)

    # ----- clients ------------------------------------------------------------------------

    def attach(self) -> tuple[Attachment, bytes]:
        """Attach a new client: the one attached before is told it was replaced. Returns the
        attachment and the recent output to replay to it."""
        previous = self.attachment
        if previous is not None:
            previous.replaced = True
            previous.wake.set()
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        attachment = Attachment()
        self.attachment = attachment
        self.delivered = False
        self.last_activity = self._loop.time()
        self._resume_if_room()
        return attachment, self.buffer.replay()

    def detach(self, attachment: Attachment) -> None:
        """A client went away: a terminal waits for another within the grace period, a command
        without a terminal ends."""
        if self.attachment is not attachment:
            return
        self.attachment = None
        if self.delivered or (self._ending is not None and self.exited):
            self._table.remove(self)
        elif not self.tty:
            self.end("its connection closed")
        elif self._ending is None:
            self._arm_grace()
            self._resume_if_room()  # a detached terminal may buffer more

    def status_delivered(self, attachment: Attachment) -> None:
        """The attached client received the exit status: nothing is left to keep."""
        if self.attachment is attachment:
            self.delivered = True

    # ----- output -------------------------------------------------------------------------

    def _threshold(self) -> int:
        limit = self._table.limits.buffer_bytes
        return min(limit, _ATTACHED_READAHEAD) if self.attachment is not None else limit

    def _read(self, fd: int) -> None:
        # What is there now, up to _READ_BYTES: a pty hands out at most what one write of
        # lxc-attach put in (1 KiB), and one message per read would cost a send each.
        chunks: list[bytes] = []
        size = 0
        ended = False
        while size < _READ_BYTES:
            try:
                data = os.read(fd, _READ_BYTES - size)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.EIO:  # EIO: the terminal's other side is closed
                    log.warning("session %s/%s: read failed: %s", self.container, self.id, exc)
                data = b""
            if not data:
                ended = True
                break
            chunks.append(data)
            size += len(data)
        if chunks:
            self._push(fd, chunks[0] if len(chunks) == 1 else b"".join(chunks))
        if ended:
            self._close_stream(fd)

    def _push(self, fd: int, data: bytes) -> None:
        if not self._noted:
            # The command runs once it writes: its session is known from now on, even after
            # its leader (the shell) is gone and only its jobs are left.
            self._noted = True
            self.process.tree.note_sessions()
        if self._adds_cr is None:
            self._adds_cr = self._table.lxc.terminal_adds_cr
            if not self._stdin_ready:  # output comes once lxc-attach set the terminal up
                self._stdin_ready = True
                self._flush_stdin()
        if self._adds_cr:
            data = self._crlf.feed(data)
        if data:
            self.buffer.push(self._streams[fd], data)
            self._account()
            self.last_activity = self._loop.time()
            if self.buffer.pending_bytes >= self._threshold():
                self._pause()  # resumed as its client is sent some
            elif self._over_budget():
                self._pause()
                # Resumed when any session's client is sent some.
                self._table.budget.wait(self, self._resume_if_room)
        self._wake()

    def _account(self) -> None:
        """Count in the agent's budget what the buffer holds past the floor."""
        counted = max(0, self.buffer.pending_bytes - _BUDGET_FLOOR)
        change, self._held = counted - self._held, counted
        if change > 0:
            self._table.budget.take(change)
        elif change < 0:
            self._table.budget.give(-change)

    def _over_budget(self) -> bool:
        return self._table.budget.spent and self.buffer.pending_bytes >= _BUDGET_FLOOR

    def _close_stream(self, fd: int) -> None:
        self._loop.remove_reader(fd)
        channel = self._streams.pop(fd)
        if self._adds_cr and (held := self._crlf.flush()):
            self.buffer.push(channel, held)
            self._account()
        if fd == self._input_fd():
            # A terminal's descriptor also takes input: nothing can be written to it now.
            self._stop_writing()
        with contextlib.suppress(OSError):
            os.close(fd)
        process = self.process
        if process.terminal == fd:
            process.terminal = None
        if process.stdout == fd:
            process.stdout = None
        if process.stderr == fd:
            process.stderr = None
        self._wake()

    def _pause(self) -> None:
        if not self._paused:
            self._paused = True
            for fd in self._streams:
                self._loop.remove_reader(fd)

    def _resume_if_room(self) -> None:
        if self._paused and self.buffer.pending_bytes < self._threshold():
            if self._over_budget():
                # Other sessions' output counts too: wait for some of it to be sent.
                self._table.budget.wait(self, self._resume_if_room)
                return
            self._paused = False
            for fd in self._streams:
                self._loop.add_reader(fd, self._read, fd)
            if self.exited:
                self._drain_after_exit()

    def _drain_after_exit(self) -> None:
        """Once lxc-attach has exited, what is still in the pipes is the rest of the output:
        read it now (a pipe left open by a background process would otherwise hold the
        stream open for good). Stops where the buffer is full; resumed when it drains."""
        for fd in list(self._streams):
            while fd in self._streams and not self._paused:
                try:
                    data = os.read(fd, _READ_BYTES)
                except BlockingIOError:
                    self._close_stream(fd)
                    break
                except OSError:
                    data = b""
                if not data:
                    self._close_stream(fd)
                    break
                self._push(fd, data)

    def _stop_reading(self) -> None:
        for fd in list(self._streams):
            self._loop.remove_reader(fd)
            self._streams.pop(fd)
        self._paused = False

    def _wake(self) -> None:
        if self.attachment is not None:
            self.attachment.wake.set()

    def take_output(self, limit: int) -> tuple[int, bytes] | None:
        item = self.buffer.take(limit)
        if item is not None:
            self._account()
            self._resume_if_room()
        return item

    # ----- input --------------------------------------------------------------------------

    @property
    def stdin_backlog(self) -> int:
        return self._stdin_backlog

    def _input_fd(self) -> int | None:
        return self.process.terminal if self.tty else self.process.stdin

    def write_stdin(self, data: bytes) -> None:
        if self._input_fd() is None or self._stdin_close or not data:
            return
        self._stdin.append(data)
        self._stdin_backlog += len(data)
        self.last_activity = self._loop.time()
        if self._stdin_backlog > STDIN_BACKLOG_BYTES:
            self._stdin_room.clear()
        self._flush_stdin()

    def close_stdin(self) -> None:
        """End of input (v5 close of channel 0): the command's stdin is closed once what was
        sent is written. A terminal has no end of input (send ^D): ignored."""
        if self.tty or self.process.stdin is None:
            return
        self._stdin_close = True
        self._flush_stdin()

    async def stdin_room(self) -> None:
        await self._stdin_room.wait()

    def resize(self, width: int, height: int) -> None:
        if self.process.terminal is not None:
            with contextlib.suppress(OSError):
                set_window_size(self.process.terminal, width, height)

    def _flush_stdin(self) -> None:
        fd = self._input_fd()
        if fd is None:
            self._drop_stdin()
            return
        if not self._stdin_ready:
            return  # sent once lxc-attach has set its terminal up (_check_setup)
        while self._stdin:
            chunk = self._stdin[0]
            try:
                written = os.write(fd, chunk)
            except BlockingIOError:
                written = 0
            except OSError:  # the command is gone
                self._drop_stdin()
                return
            self._stdin_backlog -= written
            if written < len(chunk):
                self._stdin[0] = chunk[written:]
                self._loop.add_writer(fd, self._flush_stdin)
                return
            self._stdin.popleft()
        self._loop.remove_writer(fd)
        self._stdin_room.set()
        if self._stdin_close and self.process.stdin is not None:
            os.close(self.process.stdin)
            self.process.stdin = None

    def _check_setup(self) -> None:
        """Poll the terminal until lxc-attach has set it up (it flushes pending input then):
        input may go from then on, and what it did to the terminal is learnt."""
        self._setup_poll = None
        fd = self.process.terminal
        setup = terminal_setup(fd) if fd is not None else False
        waited = self._loop.time() - self._spawned
        if setup is None and not self.exited and waited < _TERMINAL_SETUP_WAIT:
            self._setup_poll = self._loop.call_later(_TERMINAL_SETUP_POLL, self._check_setup)
            return
        if setup is not None and fd is not None:
            self._table.lxc.learn_terminal(setup)
        if not self._stdin_ready:
            self._stdin_ready = True
            self._flush_stdin()

    def _drop_stdin(self) -> None:
        self._stdin.clear()
        self._stdin_backlog = 0
        self._stdin_room.set()

    def _stop_writing(self) -> None:
        fd = self._input_fd()
        if fd is not None:
            self._loop.remove_writer(fd)
        self._drop_stdin()


class SessionTable:
    """Every session of the agent, by container and id, within the caps."""

    def __init__(
        self,
        lxc: Lxc,
        limits: SessionLimits,
        processes_of: Callable[[str], Iterable[int]],
        cgroup_for: Callable[[str, str], SessionCgroup],
        budget: OutputBudget,
    ) -> None:
        self.lxc = lxc
        self.limits = limits
        self.budget = budget
        self._processes_of = processes_of
        self._cgroup_for = cgroup_for
        self._sessions: dict[tuple[str, str], Session] = {}

    def get(self, container: str, session_id: str) -> Session | None:
        return self._sessions.get((container, session_id))

    def _check_caps(self, container: str) -> None:
        alive = [s for s in self._sessions.values() if s.alive]
        if len(alive) >= self.limits.per_agent:
            raise TooManySessions(
                f"this agent runs {len(alive)} sessions, its cap (sessions_per_agent)"
            )
        here = sum(1 for s in alive if s.container == container)
        if here >= self.limits.per_container:
            raise TooManySessions(
                f"container {container!r} has {here} sessions, the cap "
                "(sessions_per_container); end one first"
            )

    def open_terminal(
        self,
        container: str,
        session_id: str | None,
        command: Sequence[str],
        env: Mapping[str, str],
    ) -> tuple[Session, bool]:
        """The terminal session `session_id` of `container` if it exists (False), else a new
        one running `command` (True). Synchronous, so two requests for one new id cannot both
        create it."""
        if session_id is not None:
            existing = self._sessions.get((container, session_id))
            if existing is not None:
                return existing, False
        self._check_caps(container)
        chosen = session_id or uuid.uuid4().hex
        cgroup = self._cgroup_for(container, chosen)
        try:
            process = self.lxc.spawn_terminal(
                container, command, env, (80, 24), lambda: self._processes_of(container), cgroup
            )
        except BaseException:
            cgroup.remove()
            raise
        return self._add(container, chosen, command, process, tty=True), True

    def open_exec(
        self,
        container: str,
        command: Sequence[str],
        env: Mapping[str, str],
        streams: tuple[bool, bool, bool],
    ) -> Session:
        """A new command without a terminal; it ends with its connection."""
        self._check_caps(container)
        chosen = uuid.uuid4().hex
        cgroup = self._cgroup_for(container, chosen)
        try:
            process = self.lxc.spawn_piped(
                container, command, env, streams, lambda: self._processes_of(container), cgroup
            )
        except BaseException:
            cgroup.remove()
            raise
        return self._add(container, chosen, command, process, tty=False)

    def _add(
        self,
        container: str,
        session_id: str,
        command: Sequence[str],
        process: AttachedProcess,
        *,
        tty: bool,
    ) -> Session:
        session = Session(self, container, session_id, command, process, tty=tty)
        session.start()
        self._sessions[(container, session_id)] = session
        log.info(
            "session %s/%s started: %s (%s)",
            container,
            session_id,
            " ".join(command)[:200],
            "terminal" if tty else "no terminal",
        )
        return session

    def remove(self, session: Session) -> None:
        if self._sessions.get((session.container, session.id)) is session:
            del self._sessions[(session.container, session.id)]
        session.release()

    def terminals(self, container: str) -> list[SessionInfo]:
        """The terminal sessions of a container, oldest first."""
        chosen = [s for s in self._sessions.values() if s.container == container and s.tty]
        return [s.info() for s in sorted(chosen, key=lambda s: (s.created_at, s.id))]

    async def end(self, container: str, session_id: str) -> SessionInfo:
        session = self._sessions.get((container, session_id))
        if session is None or not session.tty:
            raise SessionNotFound(f"no terminal session {session_id!r} in {container!r}")
        await session.end("ended through the API")
        self.remove(session)
        return session.info()

    async def end_container(self, container: str) -> None:
        """End every session of a container (it is about to stop or be destroyed)."""
        await self._end_all([s for s in self._sessions.values() if s.container == container])

    async def close(self) -> None:
        """End every session (the agent is stopping)."""
        await self._end_all(list(self._sessions.values()))

    async def _end_all(self, sessions: list[Session]) -> None:
        ends: list[Awaitable[None]] = [s.end("its container stops") for s in sessions]
        if ends:
            await asyncio.gather(*ends, return_exceptions=True)
        for session in sessions:
            self.remove(session)

    def __len__(self) -> int:
        return len(self._sessions)

"""Ending what an attached command left behind, from the host: one function, `end_processes`.

An lxc-attach runs its command as its own child (LXC clones the attached process with
CLONE_PARENT), inside the container's namespaces and cgroup. What belongs to one attached
command is the tree under lxc-attach, and every process of the sessions it started: lxc-attach's
own (a command without a terminal stays in it) and the attached command's (a terminal's shell
makes one). Processes that left both (a daemon that double-forked and called setsid) are
still in the command's cgroup (session_cgroups): the tree's members include what that holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

__all__ = [
    "AttachedTree",
    "CommandCgroup",
    "InitProcess",
    "ProcessSet",
    "end_processes",
    "process_stat",
]

log = logging.getLogger(__name__)

_POLL_SECONDS = 0.02
# A fork bomb can refill what a kill round emptied; rounds stop once a scan finds nothing.
_KILL_ROUNDS = 50


@dataclass(frozen=True)
class InitProcess:
    """A running container's init: its PID and its start time in clock ticks (which tells a
    recycled PID apart)."""

    pid: int
    start_ticks: int


class CommandCgroup(Protocol):
    """The cgroup an attached command runs in (session_cgroups.SessionCgroup)."""

    def pids(self) -> set[int]:
        """Its processes, read afresh."""


class ProcessSet(Protocol):
    """The processes of one attached command, as they are now."""

    @property
    def leader(self) -> int:
        """The host process the agent started (lxc-attach), signalled last."""

    def members(self) -> set[int]:
        """Live processes (not zombies) other than the leader."""


def process_stat(pid: int) -> tuple[str, int, int] | None:
    """State, parent and session id of a process from /proc/<pid>/stat (host pids); None
    when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1]), int(fields[3])


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                kids += [int(x) for x in (task / "children").read_text().split()]
    except OSError:
        pass
    return kids


class AttachedTree:
    """What one lxc-attach started: its descendants, every process (among `candidates`, the
    container's processes) of the sessions it or its command made, and all its cgroup holds."""

    __slots__ = ("_leader", "candidates", "cgroup", "sessions")

    def __init__(
        self,
        leader: int,
        candidates: Callable[[], Iterable[int]],
        cgroup: CommandCgroup | None = None,
    ) -> None:
        self._leader = leader
        self.candidates = candidates
        self.cgroup = cgroup
        # lxc-attach's own session (it was started in a new one).
        self.sessions = {leader}

    @property
    def leader(self) -> int:
        return self._leader

    def note_sessions(self) -> None:
        """Remember the sessions of lxc-attach's children (the attached command makes one for
        a terminal): a session outlives its leader, so it is noted while the leader lives."""
        for child in _children(self._leader):
            stat = process_stat(child)
            if stat is not None:
                self.sessions.add(stat[2])

    def members(self) -> set[int]:
        self.note_sessions()
        found: set[int] = set()
        todo = [self._leader]
        while todo:
            for child in _children(todo.pop()):
                if child not in found:
                    found.add(child)
                    todo.append(child)
        for pid in self.candidates():
            stat = process_stat(pid)
            if stat is not None and stat[2] in self.sessions:
                found.add(pid)
        if self.cgroup is not None:
            found |= self.cgroup.pids()
        found.discard(self._leader)
        return {pid for pid in found if _alive(pid)}


def _alive(pid: int) -> bool:
    stat = process_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def _signal(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


async def end_processes(
    processes: ProcessSet, hangup_seconds: float, leader_exit: Awaitable[object]
) -> int:
    """Hang up, then kill, every process of `processes`; returns how many were killed.

    SIGHUP first (what a terminal's hang-up sends; a shell passes it on to its jobs), then up to
    `hangup_seconds` for them to go; SIGKILL for what is left, in rounds until a scan finds
    nothing. The leader (lxc-attach) is signalled last: it exits by itself once its command is
    gone and reaps it, so nothing is orphaned to a reaper outside the agent's control.
    `leader_exit` resolves once the leader has exited and is reaped (by the caller).
    """
    members = processes.members()
    if hangup_seconds > 0:
        _signal(members, signal.SIGHUP)
        deadline = time.monotonic() + hangup_seconds
        while members and time.monotonic() < deadline:
            await asyncio.sleep(_POLL_SECONDS)
            members = processes.members()
    killed: set[int] = set()
    for _ in range(_KILL_ROUNDS):
        if not members:
            break
        _signal(members, signal.SIGKILL)
        killed |= members
        await asyncio.sleep(_POLL_SECONDS)
        members = processes.members()
    if members:
        log.warning("processes of %d still alive after kill rounds: %s", processes.leader, members)
    exit_ = asyncio.ensure_future(leader_exit)
    try:
        # Its command is gone: it notices and exits on its own, or is killed.
        await asyncio.wait_for(asyncio.shield(exit_), max(hangup_seconds, 1.0))
    except TimeoutError:
        _signal([processes.leader], signal.SIGKILL)
        killed.add(processes.leader)
        await exit_
    return len(killed)

"""A cgroup of its own for every attached command, so that all it starts ends with it.

lxc-attach moves the process it attaches into the container's cgroups (on cgroup v2 into one
`.lxc` leaf that every attach shares), where a daemon that double-forked and called setsid is
one process among the container's: no longer below lxc-attach, in no session of the command's.
The agent starts lxc-attach already inside the container's cgroups instead, with
`--elevated-privileges=CGROUP` (the only privilege that flag then keeps is that the process
is not moved; capabilities, seccomp and the LSM profile are applied as always), and in one
hierarchy in a cgroup of its own below the container's: `tuxio-session-<id>`. Every process the
command starts is born there and stays there, daemons included, so ending the command is:
kill what that cgroup holds until it is empty (`cgroup.kill` does it at once on v2), then
remove it.

The hierarchy: the unified one on v2 (the only one); on v1 the pids hierarchy (hierarchical,
no settings a child cgroup must copy, and present wherever the agent runs, as it limits
pids). In every other hierarchy the command joins the container's own directory, as
lxc-attach would have put it; the container's limits apply to the session's cgroup as to
any cgroup below the container's.

How the child gets there, with no moment at which a process of the command exists elsewhere:

- cgroup v1: the agent's spawning thread itself joins them (its id written to each `tasks`:
  v1 moves single threads), starts lxc-attach (vfork: the child is born in the thread's
  cgroups) and goes back to its own at once. Nothing else runs on that thread meanwhile (the
  spawn is synchronous on the event loop's thread). Left out: the freezer hierarchy (a frozen
  container would freeze the agent's thread) and a hybrid host's controller-less unified
  one (no single thread moves there, and it limits nothing).
- cgroup v2 moves whole processes only: the child joins between fork and exec (a function run
  there writes "0" to `cgroup.procs`, opened beforehand). That costs a fork where the agent
  would vfork (measured here on a 200 MB Python process: 57 ms a spawn, against 0.6 ms);
  `clone3(CLONE_INTO_CGROUP)` would avoid it, which Python's subprocess does not offer.

A visitor who is root in their container may move their own processes from the session's
cgroup into the container's (the container's cgroups are delegated to it): that escapes the
end of the session, never the container's limits, and the container's end kills them all.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .cgroups import V1_CONTROLLERS, ControllerMissing, payload_path

__all__ = ["SessionCgroup", "hierarchy_mounts", "session_cgroup"]

log = logging.getLogger(__name__)

PREFIX = "tuxio-session-"
_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,160}")


def hierarchy_mounts(mountinfo: str) -> dict[frozenset[str], Path]:
    """Every mounted cgroup hierarchy by what names it (its controllers and name=X; the empty
    set for v2's unified one), from the text of /proc/self/mountinfo. The first mount of a
    hierarchy wins."""
    found: dict[frozenset[str], Path] = {}
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields, extra = left.split(), right.split()
        if len(fields) < 5 or len(extra) < 3:
            continue
        mount_point = Path(fields[4].replace("\\040", " "))
        if extra[0] == "cgroup2":
            found.setdefault(frozenset(), mount_point)
        elif extra[0] == "cgroup":
            key = frozenset(
                o for o in extra[2].split(",") if o in V1_CONTROLLERS or o.startswith("name=")
            )
            if key:
                found.setdefault(key, mount_point)
    return found


@functools.cache
def _host_hierarchies() -> dict[frozenset[str], Path]:
    # Read once: the cgroup mounts of a host do not move while the agent runs.
    return hierarchy_mounts(Path("/proc/self/mountinfo").read_text())


@dataclass(frozen=True)
class SessionCgroup:
    """The cgroup of one attached command (`own`) and every directory it joins (`joined`:
    `own` in one hierarchy, the container's directory in the others); `home` (v1 only): the
    spawning thread's own directory in each of those hierarchies, in the same order."""

    own: Path
    joined: tuple[Path, ...]
    home: tuple[Path, ...] | None

    @contextlib.contextmanager
    def joiner(self) -> Iterator[Callable[[], None] | None]:
        """Where a process started in this context is born in `joined`: on v1 this thread
        is there for the duration (nothing to run in the child: None), on v2 the function
        to run in the child between fork and exec. Spawn synchronously inside it."""
        if self.home is not None:
            yield from _thread_in(self.joined, self.home)
            return
        fds: list[int] = []
        try:
            for directory in self.joined:
                fds.append(os.open(directory / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC))

            def join() -> None:
                for fd in fds:
                    os.write(fd, b"0")

            yield join
        finally:
            for fd in fds:
                os.close(fd)

    def pids(self) -> set[int]:
        """The processes in the session's cgroup and below it (a visitor may make cgroups
        there), read afresh."""
        found: set[int] = set()
        for directory, _, _ in os.walk(self.own):
            with contextlib.suppress(OSError):
                found.update(int(p) for p in (Path(directory) / "cgroup.procs").read_text().split())
        return found

    def kill(self) -> None:
        """Kill every process in the cgroup: all at once through cgroup.kill where the kernel
        has it (v2, Linux 5.14), else each one (the caller repeats until none is left)."""
        kill_file = self.own / "cgroup.kill"
        if kill_file.exists():
            with contextlib.suppress(OSError):
                kill_file.write_text("1")
                return
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def remove(self) -> bool:
        """Remove the cgroup and any below it once they hold no process; False while one
        still does."""
        below = sorted((Path(d) for d, _, _ in os.walk(self.own)), key=lambda p: -len(p.parts))
        for directory in below:
            try:
                directory.rmdir()
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.debug("cannot remove %s yet: %s", directory, exc)
                return False
        return True


def _thread_in(joined: tuple[Path, ...], home: tuple[Path, ...]) -> Iterator[None]:
    """This thread in `joined` (v1: a thread id written to `tasks` moves that thread alone),
    then back `home`; the cpu hierarchy is joined last and left first, so that a container
    out of CPU quota cannot hold the thread up."""
    tid = str(threading.get_native_id())
    order = sorted(range(len(joined)), key=lambda i: "cpu" in joined[i].parent.name.split(","))
    moved: list[int] = []
    try:
        for i in order:
            (joined[i] / "tasks").write_text(tid)
            moved.append(i)
        yield
    finally:
        for i in reversed(moved):
            (home[i] / "tasks").write_text(tid)


def _own_cgroups() -> dict[frozenset[str], str]:
    """This thread's cgroup path in each hierarchy."""
    found: dict[frozenset[str], str] = {}
    for line in Path("/proc/thread-self/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        found[frozenset(names.split(",")) if names else frozenset()] = path
    return found


def session_cgroup(init_pid: int, container: str, session_id: str) -> SessionCgroup:
    """Make the cgroup of a new attached command of the container whose init is `init_pid`.

    ControllerMissing when the container's cgroups cannot be found (it is not running, or a
    hierarchy it is in is not mounted here: then it could not be joined either)."""
    if not _SAFE_ID.fullmatch(session_id):
        raise ValueError(f"session id {session_id!r} cannot name a cgroup")
    mounts = _host_hierarchies()
    directories: dict[frozenset[str], Path] = {}
    try:
        lines = Path(f"/proc/{init_pid}/cgroup").read_text().splitlines()
    except OSError as exc:
        raise ControllerMissing(f"no cgroups for pid {init_pid}: {exc}") from None
    for line in lines:
        _, names, path = line.split(":", 2)
        key = frozenset(names.split(",")) if names else frozenset()
        mount = mounts.get(key)
        if mount is None:
            raise ControllerMissing(f"cgroup hierarchy {names or 'unified'!r} is not mounted")
        directories[key] = mount / payload_path(path, container)
    if not directories:
        raise ControllerMissing(f"no cgroups for pid {init_pid}")
    v2 = set(directories) == {frozenset()}
    tracked = frozenset() if v2 else next((k for k in directories if "pids" in k), None)
    if tracked is None:
        raise ControllerMissing("no pids hierarchy: a session cannot have a cgroup of its own")
    home: tuple[Path, ...] | None = None
    if not v2:
        # The thread joins them (v1); never the freezer (a frozen container would hold it),
        # nor the controller-less unified hierarchy of a hybrid host (v2 moves no single
        # thread; it limits nothing there).
        directories = {k: d for k, d in directories.items() if k and "freezer" not in k}
        mine = _own_cgroups()
        home = tuple(mounts[key] / mine[key].lstrip("/") for key in directories)
    own = directories[tracked] / f"{PREFIX}{session_id}"
    own.mkdir()
    joined = tuple(own if key == tracked else d for key, d in directories.items())
    return SessionCgroup(own, joined, home)

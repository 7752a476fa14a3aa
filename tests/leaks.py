"""What a test session leaves behind: it must be nothing.

Every data directory (an agent's templates and LXC path) and every network namespace a
session makes is registered here as it is made. At the end of the session, after every
fixture's teardown, whatever still refers to one of them is a leak: a process naming a
session directory in its argv (an LXC monitor, an init's lxc-start, an lxc-attach, an agent),
a process the tests started that still runs, a mount under a session directory, a loop device
backed by a file there (a container's disk image, deleted or not), a disk image file left
there, the directory itself, a network namespace or veth of the session.
Only the session's own things are looked at, so sessions running side by side (another
checkout's, CI's) never see each other's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Leftovers", "SessionThings", "clean", "find_leftovers"]


@dataclass
class SessionThings:
    """What this session made, as it made it."""

    roots: list[Path] = field(default_factory=list)
    netns: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)


@dataclass
class Leftovers:
    processes: list[tuple[int, str]] = field(default_factory=list)
    mounts: list[str] = field(default_factory=list)
    loops: list[str] = field(default_factory=list)
    images: list[Path] = field(default_factory=list)
    directories: list[Path] = field(default_factory=list)
    netns: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return any(
            (
                self.processes,
                self.mounts,
                self.loops,
                self.images,
                self.directories,
                self.netns,
                self.links,
            )
        )

    def report(self) -> str:
        lines = []
        lines += [f"process {pid}: {argv}" for pid, argv in self.processes]
        lines += [f"mount: {m}" for m in self.mounts]
        lines += [f"loop device: {d}" for d in self.loops]
        lines += [f"disk image: {i}" for i in self.images]
        lines += [f"directory: {d}" for d in self.directories]
        lines += [f"network namespace: {n}" for n in self.netns]
        lines += [f"network link: {n}" for n in self.links]
        return "\n".join(lines)


def _argv(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _processes(things: SessionThings) -> list[tuple[int, str]]:
    roots = [str(r) for r in things.roots]
    found: dict[int, str] = {}
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        argv = _argv(int(entry.name))
        if argv and any(root in argv for root in roots) and _alive(int(entry.name)):
            found[int(entry.name)] = argv
    for pid in things.pids:
        if pid not in found and _alive(pid):
            found[pid] = _argv(pid) or "?"
    return sorted(found.items())


def _under(path: str, roots: Iterable[Path]) -> bool:
    return any(path == str(r) or path.startswith(f"{r}/") for r in roots)


def _mounts(roots: list[Path]) -> list[str]:
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        mount_point = fields[4]
        source = fields[fields.index("-") + 2] if "-" in fields else ""
        if _under(mount_point, roots) or _under(source, roots):
            found.append(f"{mount_point} ({source})")
    return found


def _loops(roots: list[Path]) -> list[str]:
    found = []
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        with contextlib.suppress(OSError):
            target = backing.read_text().strip().removesuffix(" (deleted)")
            if _under(target, roots):
                found.append(f"/dev/{backing.parents[1].name} -> {target}")
    return found


def _images(roots: list[Path]) -> list[Path]:
    """Containers' disk images (<lxcpath>/<name>/disk.img) and pristine ones still there."""
    found: list[Path] = []
    for root in roots:
        if root.is_dir():
            found += root.glob("containers/*/disk.img")
            found += root.glob("disk/pristine/*.img")
    return sorted(found)


def _netns() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return {line.split()[0] for line in listed.stdout.splitlines() if line.strip()}


def _links() -> set[str]:
    return {p.name for p in Path("/sys/class/net").iterdir()}


def find_leftovers(things: SessionThings) -> Leftovers:
    return Leftovers(
        processes=_processes(things),
        mounts=_mounts(things.roots),
        loops=_loops(things.roots),
        images=_images(things.roots),
        directories=[r for r in things.roots if r.exists()],
        netns=sorted(set(things.netns) & _netns()),
        links=sorted(set(things.links) & _links()),
    )


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                kids += [int(k) for k in (task / "children").read_text().split()]
    return kids


def _kill_tree(pid: int) -> None:
    """SIGKILL a process's children first, then the process: an LXC monitor's child is its
    container's init, whose death ends every process of the container (its PID namespace)."""
    for child in _children(pid):
        _kill_tree(child)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def clean(things: SessionThings, found: Leftovers) -> None:
    """Remove what was left, so the next session starts clean (the run still fails)."""
    for pid, _ in found.processes:
        _kill_tree(pid)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid, _ in found.processes):
        time.sleep(0.05)
    # A killed monitor cannot remove its container's cgroups: the empty directories go too.
    for _, argv in found.processes:
        if argv.startswith("[lxc monitor] ") and len(argv.split()) == 4:
            name = argv.split()[3]
            for directory in Path("/sys/fs/cgroup").glob(f"*/lxc.*.{name}"):
                with contextlib.suppress(OSError):
                    directory.rmdir()
            for directory in Path("/sys/fs/cgroup").glob(f"lxc.*.{name}"):
                with contextlib.suppress(OSError):
                    directory.rmdir()
    for mount in sorted(found.mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", mount.split(" ")[0]], capture_output=True, check=False)
    for loop in found.loops:
        subprocess.run(["losetup", "-d", loop.split(" ")[0]], capture_output=True, check=False)
    for directory in found.directories:
        shutil.rmtree(directory, ignore_errors=True)
    for link in found.links:
        subprocess.run(["ip", "link", "del", link], capture_output=True, check=False)
    for name in found.netns:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)

"""Facts about the host: cores, memory, AppArmor, and the subordinate id range for containers."""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .cpuset import default_reserved, split_cores
from .errors import HostPrerequisiteMissing

__all__ = [
    "CAP_SYS_RESOURCE",
    "HostCpus",
    "apparmor_enabled",
    "ensure_subordinate_ids",
    "ensure_traversable",
    "has_capability",
    "host_cpus",
    "meminfo",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HostCpus:
    """The cores the agent may hand out."""

    available: list[int]
    reserved: list[int]
    shared: list[int]


def host_cpus(reserved: int | None) -> HostCpus:
    """Split the cores this process may run on; `reserved` None picks the default."""
    available = sorted(os.sched_getaffinity(0))
    count = default_reserved(len(available)) if reserved is None else reserved
    kept, shared = split_cores(available, count)
    return HostCpus(available, kept, shared)


CAP_SYS_RESOURCE = 24


def has_capability(cap: int, status: Path = Path("/proc/self/status")) -> bool:
    """Whether this process holds capability number `cap` (in its effective set)."""
    for line in status.read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> cap & 1)
    return False


def meminfo(path: Path = Path("/proc/meminfo")) -> dict[str, int]:
    """/proc/meminfo in bytes."""
    values: dict[str, int] = {}
    for line in path.read_text().splitlines():
        key, _, rest = line.partition(":")
        fields = rest.split()
        if fields:
            values[key] = int(fields[0]) * (1024 if len(fields) > 1 else 1)
    return values


def apparmor_enabled() -> bool:
    try:
        return Path("/sys/module/apparmor/parameters/enabled").read_text().strip() == "Y"
    except OSError:
        return False


def ensure_traversable(path: Path, owned: Path) -> None:
    """Let container root (an unprivileged host id) reach `path`, as LXC needs.

    Directories from `owned` down are the agent's and get o+x (traversable, not listable);
    any ancestor above it that others cannot traverse is reported, not changed.
    """
    path, owned = path.resolve(), owned.resolve()
    for directory in [path, *path.parents]:
        mode = directory.stat().st_mode
        if mode & stat.S_IXOTH:
            continue
        if directory == owned or owned in directory.parents:
            directory.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
        else:
            raise HostPrerequisiteMissing(
                f"{directory} is not traversable by others (mode {stat.S_IMODE(mode):o}); "
                f"container root, an unprivileged host id, must reach {path}"
            )


def ensure_subordinate_ids(base: int, size: int, user: str = "root") -> list[Path]:
    """Make /etc/subuid and /etc/subgid grant `user` the range the containers map to.

    LXC maps ids through newuidmap/newgidmap, which refuse a range these files do not grant.
    Returns the files that had to be changed.
    """
    changed: list[Path] = []
    for path in (Path("/etc/subuid"), Path("/etc/subgid")):
        lines = path.read_text().splitlines() if path.exists() else []
        covered = False
        for line in lines:
            fields = line.strip().split(":")
            if (
                len(fields) == 3
                and fields[0] == user
                and fields[1].isdigit()
                and fields[2].isdigit()
            ):
                start, count = int(fields[1]), int(fields[2])
                if start <= base and base + size <= start + count:
                    covered = True
        if not covered:
            try:
                with path.open("a") as fh:
                    fh.write(f"{user}:{base}:{size}\n")
            except OSError as exc:
                raise HostPrerequisiteMissing(
                    f"{path} does not grant {user} ids {base}..{base + size - 1} "
                    f"and could not be changed: {exc}"
                ) from exc
            log.info("granted %s the ids %d..%d in %s", user, base, base + size - 1, path)
            changed.append(path)
    return changed

"""cgroup v1 and v2 behind one small interface.

A driver renders limits into (file, value) settings. The same settings become `lxc.cgroup.*`
(v1) or `lxc.cgroup2.*` (v2) keys in the container's config, so limits hold from the first
instruction the container runs, and are written to the container's cgroup files when they
change live. Reading goes the other way: what is in force is read back from the files, never
assumed.

File access goes through `CgroupFiles` (get and set one key of one container), so the rendering
and parsing can be tested on any machine, v2 included, against a directory tree.
"""

from __future__ import annotations

import functools
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CFS_PERIOD_US",
    "V1_CONTROLLERS",
    "CgroupDriver",
    "CgroupFiles",
    "CgroupLimits",
    "CgroupReading",
    "CgroupUsage",
    "CgroupV1",
    "CgroupV2",
    "ControllerMissing",
    "detect_driver",
    "locate_cgroup",
    "payload_path",
]

CFS_PERIOD_US = 100_000
# v1 reports "no limit" as the largest page-aligned 63-bit number; anything this big is unlimited.
_V1_UNLIMITED = 2**62


class ControllerMissing(LookupError):
    """The host has no such cgroup controller or file (e.g. no swap accounting)."""


@dataclass(frozen=True)
class CgroupLimits:
    """The limits that go through cgroups, already resolved to concrete values."""

    cpuset: str
    cpu_quota: float | None
    memory: int
    memory_swap: int | None  # None: the host does not account swap, so it is not limited
    pids: int


@dataclass(frozen=True)
class CgroupReading:
    """Limits in force and usage, as the cgroup files tell them."""

    cpuset: str
    cpu_quota: float | None
    memory: int | None
    memory_swap: int | None
    pids: int | None
    cpu_seconds: float
    memory_bytes: int
    memory_peak_bytes: int | None
    pids_current: int


@dataclass(frozen=True)
class CgroupUsage:
    """What a container has used, for metrics: read at every scrape, so a few files only."""

    cpu_seconds: float
    memory_bytes: int
    memory_peak_bytes: int | None  # None: the kernel keeps no peak (v2 before Linux 5.19)
    oom_kills: int | None  # None: the kernel does not count them (v1 before Linux 4.13)
    pids: int


class CgroupFiles:
    """Get and set keys ('memory.max', 'cpuset.cpus') of one container's cgroup.

    `dirs` maps a controller name to the container's directory in that hierarchy; a v2 host
    has a single directory under the key "".
    """

    def __init__(self, dirs: dict[str, Path]) -> None:
        self.dirs = dirs

    def path(self, key: str) -> Path:
        if "" in self.dirs:
            return self.dirs[""] / key
        controller = key.split(".", 1)[0]
        try:
            return self.dirs[controller] / key
        except KeyError:
            raise ControllerMissing(f"no {controller} controller for {key}") from None

    def get(self, key: str) -> str:
        try:
            fd = os.open(self.path(key), os.O_RDONLY)
        except FileNotFoundError:
            raise ControllerMissing(f"{key} does not exist") from None
        try:
            # cgroup files are small; one read() is the whole value (no text layer: 2x cheaper).
            return os.read(fd, 65536).decode().strip()
        finally:
            os.close(fd)

    def get_optional(self, key: str) -> str | None:
        try:
            return self.get(key)
        except ControllerMissing:
            return None

    def set(self, key: str, value: str) -> None:
        path = self.path(key)
        # One write() per value: the kernel parses each write as a whole.
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)


class CgroupDriver(ABC):
    """The interface both cgroup versions implement."""

    version: int
    config_prefix: str

    def __init__(self, root: Path, swap_accounting: bool) -> None:
        self.root = root
        self.swap_accounting = swap_accounting

    @abstractmethod
    def render(self, limits: CgroupLimits) -> list[tuple[str, str]]:
        """Settings for a new container, in an order the kernel accepts from defaults."""

    @abstractmethod
    def read(self, files: CgroupFiles) -> CgroupReading:
        """Limits and usage in force."""

    # The files usage is read from, in the order parse_usage takes their contents.
    usage_keys: tuple[str, ...]

    @abstractmethod
    def parse_usage(self, texts: list[str | None]) -> CgroupUsage:
        """Usage from the contents of `usage_keys` (None: that file does not exist)."""

    def usage(self, files: CgroupFiles) -> CgroupUsage:
        """Usage alone, from five files (limits are what the agent wrote: no need to read)."""
        return self.parse_usage([files.get_optional(key) for key in self.usage_keys])

    @abstractmethod
    def _memory_keys(self) -> tuple[str, str]:
        """(memory limit key, memory+swap limit key)."""

    def config_lines(self, limits: CgroupLimits) -> list[str]:
        """The `lxc.cgroup*.` config lines for these limits."""
        return [f"{self.config_prefix}.{key} = {value}" for key, value in self.render(limits)]

    def live_plan(self, current: CgroupReading, limits: CgroupLimits) -> list[tuple[str, str]]:
        """Only the settings that differ from `current`, in an order the kernel accepts.

        Memory comes before memory+swap when shrinking and after it when growing, because v1
        refuses a memory limit above the memory+swap limit.
        """
        wanted = dict(self.render(limits))
        now = dict(self.render_reading(current))
        changes = [(key, value) for key, value in wanted.items() if now.get(key) != value]
        mem_key, swap_key = self._memory_keys()
        keys = [key for key, _ in changes]
        if mem_key in keys and swap_key in keys:
            growing = current.memory_swap is not None and limits.memory > current.memory_swap
            first, second = (swap_key, mem_key) if growing else (mem_key, swap_key)
            ordered = [c for c in changes if c[0] not in (mem_key, swap_key)]
            ordered += [(first, wanted[first]), (second, wanted[second])]
            return ordered
        return changes

    @abstractmethod
    def render_reading(self, reading: CgroupReading) -> list[tuple[str, str]]:
        """The settings a reading corresponds to, rendered as `render` would."""

    def apply(self, files: CgroupFiles, limits: CgroupLimits) -> list[tuple[str, str]]:
        """Bring a running container's cgroup to `limits`; returns what was written."""
        plan = self.live_plan(self.read(files), limits)
        for key, value in plan:
            files.set(key, value)
        return plan

    def files_for(self, pid: int, name: str) -> CgroupFiles:
        """The cgroup files of the container whose init is `pid`."""
        return locate_cgroup(pid, name, self)


class CgroupV1(CgroupDriver):
    """The legacy hierarchies, one per controller (also the hybrid layout)."""

    version = 1
    config_prefix = "lxc.cgroup"

    def _memory_keys(self) -> tuple[str, str]:
        return "memory.limit_in_bytes", "memory.memsw.limit_in_bytes"

    def render(self, limits: CgroupLimits) -> list[tuple[str, str]]:
        quota = -1 if limits.cpu_quota is None else round(limits.cpu_quota * CFS_PERIOD_US)
        settings = [
            ("cpuset.cpus", limits.cpuset),
            ("cpu.cfs_period_us", str(CFS_PERIOD_US)),
            ("cpu.cfs_quota_us", str(quota)),
            ("memory.limit_in_bytes", str(limits.memory)),
        ]
        if self.swap_accounting and limits.memory_swap is not None:
            settings.append(("memory.memsw.limit_in_bytes", str(limits.memory_swap)))
        settings.append(("pids.max", str(limits.pids)))
        return settings

    def render_reading(self, reading: CgroupReading) -> list[tuple[str, str]]:
        return self.render(
            CgroupLimits(
                cpuset=reading.cpuset,
                cpu_quota=reading.cpu_quota,
                memory=-1 if reading.memory is None else reading.memory,
                memory_swap=-1 if reading.memory_swap is None else reading.memory_swap,
                pids=-1 if reading.pids is None else reading.pids,
            )
        )

    def read(self, files: CgroupFiles) -> CgroupReading:
        quota = int(files.get("cpu.cfs_quota_us"))
        period = int(files.get("cpu.cfs_period_us"))
        swap = files.get_optional("memory.memsw.limit_in_bytes") if self.swap_accounting else None
        peak = files.get_optional("memory.max_usage_in_bytes")
        return CgroupReading(
            cpuset=files.get("cpuset.cpus"),
            cpu_quota=None if quota < 0 else quota / period,
            memory=_v1_limit(files.get("memory.limit_in_bytes")),
            memory_swap=None if swap is None else _v1_limit(swap),
            pids=_max_or_int(files.get("pids.max")),
            cpu_seconds=int(files.get("cpuacct.usage")) / 1e9,
            memory_bytes=int(files.get("memory.usage_in_bytes")),
            memory_peak_bytes=None if peak is None else int(peak),
            pids_current=int(files.get("pids.current")),
        )

    usage_keys = (
        "cpuacct.usage",
        "memory.usage_in_bytes",
        "memory.max_usage_in_bytes",
        "memory.oom_control",
        "pids.current",
    )

    def parse_usage(self, texts: list[str | None]) -> CgroupUsage:
        cpu, memory, peak, oom_control, pids = texts
        # memory.oom_control counts kills ("oom_kill N") since Linux 4.13.
        return CgroupUsage(
            cpu_seconds=int(_required(cpu, "cpuacct.usage")) / 1e9,
            memory_bytes=int(_required(memory, "memory.usage_in_bytes")),
            memory_peak_bytes=None if peak is None else int(peak),
            oom_kills=_keyed(_required(oom_control, "memory.oom_control")).get("oom_kill"),
            pids=int(_required(pids, "pids.current")),
        )


class CgroupV2(CgroupDriver):
    """The unified hierarchy."""

    version = 2
    config_prefix = "lxc.cgroup2"

    def _memory_keys(self) -> tuple[str, str]:
        return "memory.max", "memory.swap.max"

    def render(self, limits: CgroupLimits) -> list[tuple[str, str]]:
        quota = "max" if limits.cpu_quota is None else str(round(limits.cpu_quota * CFS_PERIOD_US))
        settings = [
            ("cpuset.cpus", limits.cpuset),
            ("cpu.max", f"{quota} {CFS_PERIOD_US}"),
            ("memory.max", str(limits.memory)),
        ]
        if self.swap_accounting and limits.memory_swap is not None:
            # v2 limits swap alone; the API speaks of memory+swap as v1 and Docker do.
            settings.append(("memory.swap.max", str(max(0, limits.memory_swap - limits.memory))))
        settings.append(("pids.max", str(limits.pids)))
        return settings

    def render_reading(self, reading: CgroupReading) -> list[tuple[str, str]]:
        settings = [
            ("cpuset.cpus", reading.cpuset),
            (
                "cpu.max",
                (
                    "max"
                    if reading.cpu_quota is None
                    else str(round(reading.cpu_quota * CFS_PERIOD_US))
                )
                + f" {CFS_PERIOD_US}",
            ),
            ("memory.max", "max" if reading.memory is None else str(reading.memory)),
        ]
        if self.swap_accounting:
            if reading.memory_swap is None or reading.memory is None:
                settings.append(("memory.swap.max", "max"))
            else:
                settings.append(("memory.swap.max", str(reading.memory_swap - reading.memory)))
        settings.append(("pids.max", "max" if reading.pids is None else str(reading.pids)))
        return settings

    def read(self, files: CgroupFiles) -> CgroupReading:
        quota_text, period_text = files.get("cpu.max").split()
        memory = _max_or_int(files.get("memory.max"))
        swap_text = files.get_optional("memory.swap.max") if self.swap_accounting else None
        swap = None if swap_text is None else _max_or_int(swap_text)
        stat = dict(line.split() for line in files.get("cpu.stat").splitlines() if line.strip())
        peak = files.get_optional("memory.peak")
        return CgroupReading(
            cpuset=files.get("cpuset.cpus"),
            cpu_quota=None if quota_text == "max" else int(quota_text) / int(period_text),
            memory=memory,
            memory_swap=None if memory is None or swap is None else memory + swap,
            pids=_max_or_int(files.get("pids.max")),
            cpu_seconds=int(stat["usage_usec"]) / 1e6,
            memory_bytes=int(files.get("memory.current")),
            memory_peak_bytes=None if peak is None else int(peak),
            pids_current=int(files.get("pids.current")),
        )

    usage_keys = ("cpu.stat", "memory.current", "memory.peak", "memory.events", "pids.current")

    def parse_usage(self, texts: list[str | None]) -> CgroupUsage:
        stat, memory, peak, events, pids = texts
        # memory.events counts the kills in this cgroup and below ("oom_kill N").
        return CgroupUsage(
            cpu_seconds=_keyed(_required(stat, "cpu.stat"))["usage_usec"] / 1e6,
            memory_bytes=int(_required(memory, "memory.current")),
            memory_peak_bytes=None if peak is None else int(peak),
            oom_kills=_keyed(_required(events, "memory.events")).get("oom_kill"),
            pids=int(_required(pids, "pids.current")),
        )


def _required(text: str | None, key: str) -> str:
    if text is None:
        raise ControllerMissing(f"{key} does not exist")
    return text


def _keyed(text: str) -> dict[str, int]:
    """A flat-keyed cgroup file ("key value" lines) as integers."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value:
            values[key] = int(value)
    return values


def _v1_limit(text: str) -> int | None:
    value = int(text)
    return None if value < 0 or value >= _V1_UNLIMITED else value


def _max_or_int(text: str) -> int | None:
    return None if text == "max" else int(text)


# The controllers a v1 hierarchy may carry (its mount options name them).
V1_CONTROLLERS = frozenset(
    {
        "cpu",
        "cpuacct",
        "cpuset",
        "memory",
        "pids",
        "devices",
        "freezer",
        "blkio",
        "net_cls",
        "net_prio",
        "perf_event",
        "hugetlb",
        "rdma",
        "misc",
    }
)


def _mounts(mountinfo: str) -> tuple[dict[str, Path], Path | None]:
    """v1 controller -> mount point, and the v2 mount point, from /proc/self/mountinfo."""
    v1: dict[str, Path] = {}
    v2: Path | None = None
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields, extra = left.split(), right.split()
        if len(fields) < 5 or len(extra) < 3:
            continue
        mount_point = Path(fields[4].replace("\\040", " "))
        if extra[0] == "cgroup2":
            v2 = v2 or mount_point
        elif extra[0] == "cgroup":
            for option in extra[2].split(","):
                if option.startswith("name="):
                    continue
                if option in V1_CONTROLLERS:
                    v1.setdefault(option, mount_point)
    return v1, v2


def payload_path(path: str, name: str) -> str:
    """Cut a cgroup path after the container's payload directory.

    An init that makes sub-cgroups of its own (systemd does) sits below the payload directory,
    but the limits belong to the payload directory itself.
    """
    parts = path.strip("/").split("/")
    marker = f"lxc.payload.{name}"
    if marker in parts:
        parts = parts[: parts.index(marker) + 1]
    return "/".join(parts)


@functools.cache
def _host_mounts() -> tuple[dict[str, Path], Path | None]:
    # Read once: the cgroup mounts of a host do not move while the agent runs.
    return _mounts(Path("/proc/self/mountinfo").read_text())


def locate_cgroup(pid: int, name: str, driver: CgroupDriver) -> CgroupFiles:
    """Find the cgroup directories of the container whose init is `pid` via /proc."""
    v1_mounts, v2_mount = _host_mounts()
    dirs: dict[str, Path] = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        hierarchy, controllers, path = line.split(":", 2)
        relative = payload_path(path, name)
        if driver.version == 2:
            if hierarchy == "0" and v2_mount is not None:
                dirs[""] = v2_mount / relative
        else:
            for controller in controllers.split(","):
                if controller in v1_mounts:
                    dirs[controller] = v1_mounts[controller] / relative
    if not dirs:
        raise ControllerMissing(f"no cgroup found for pid {pid}")
    return CgroupFiles(dirs)


def detect_driver(root: Path = Path("/sys/fs/cgroup")) -> CgroupDriver:
    """v2 when the unified hierarchy is all there is, else v1 (legacy or hybrid)."""
    if (root / "cgroup.controllers").exists():
        with_memory = [c for c in _children(root) if (c / "memory.max").exists()]
        # Swap accounting shows as memory.swap.max beside memory.max; with no child to look
        # at, assume the common case (it is on in every mainstream kernel built for v2).
        swap = not with_memory or any((c / "memory.swap.max").exists() for c in with_memory)
        return CgroupV2(root, swap_accounting=swap)
    swap = (root / "memory" / "memory.memsw.limit_in_bytes").exists()
    return CgroupV1(root, swap_accounting=swap)


def _children(root: Path) -> list[Path]:
    try:
        return [entry for entry in root.iterdir() if entry.is_dir()]
    except OSError:
        return []

"""Per-container and host metrics, read at scrape time (a prometheus_client Collector).

LXD's /1.0/metrics is the model: one series per instance, labelled by its name. Here the
label is `container`, the LXC name, which the operator derives from the Sandbox's UID (never a
visitor, an address or a Sandbox's own name); a host holds at most its capacity of them, so
the label is bounded by the host and a series ends with its container.

No value is cached between scrapes (LXD caches 8 s because its collection is slow): each
scrape reads five small cgroup files per running container, found without a process spawn
or an await from what the agent already knows (ContainerService.running_cgroups), and one
statvfs of the data directory. What is kept is the files' descriptors: a read of a kept
descriptor is one pread(2), an open-read-close three system calls and a path lookup (ten
times the cost, measured). A kept descriptor does not hold a cgroup back: LXC removes it as
ever, and the next read fails with ENODEV, which ends that container's series and closes its
descriptors. Disk per container is the exception: summing a writable layer is a walk, done
in the background by tuxio.nodeagent.disk_usage and reported here.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from tuxio.common.metrics import render_families

from .cgroups import CgroupDriver, CgroupFiles, CgroupUsage, ControllerMissing
from .disk_usage import DiskUsage
from .service import ContainerService

__all__ = ["SandboxCollector"]

_BY_CONTAINER = ["container"]
# The families with a series per container (render writes them itself).
_PER_CONTAINER = ("cpu", "memory", "peak", "oom", "pids", "disk")


class _UsageFiles:
    """One container's usage files, kept open (None: the file does not exist here)."""

    def __init__(self, driver: CgroupDriver, files: CgroupFiles) -> None:
        self.files = files
        self.fds: list[int | None] = []
        try:
            for key in driver.usage_keys:
                try:
                    self.fds.append(os.open(files.path(key), os.O_RDONLY | os.O_CLOEXEC))
                except (FileNotFoundError, ControllerMissing):
                    self.fds.append(None)
        except BaseException:
            self.close()
            raise

    def read(self, driver: CgroupDriver) -> CgroupUsage:
        return driver.parse_usage(
            [None if fd is None else os.pread(fd, 4096, 0).decode() for fd in self.fds]
        )

    def close(self) -> None:
        for fd in self.fds:
            if fd is not None:
                os.close(fd)
        self.fds = []


class SandboxCollector(Collector):
    """Reads every running container's usage and the host's free space at each scrape."""

    def __init__(self, service: ContainerService, disk: DiskUsage | None = None) -> None:
        self.service = service
        self.disk = disk
        self._open: dict[str, _UsageFiles] = {}

    def describe(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        # Registering must not collect (it would read every container at start-up).
        yield from self._families().values()

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        families = self._families()
        cpu, memory, peak = families["cpu"], families["memory"], families["peak"]
        ooms, pids = families["oom"], families["pids"]
        records = self.service.records
        running = 0
        for name, usage in self._usages():
            running += 1
            label = [name]
            cpu.add_metric(label, usage.cpu_seconds)
            memory.add_metric(label, usage.memory_bytes)
            if usage.memory_peak_bytes is not None:
                peak.add_metric(label, usage.memory_peak_bytes)
            if usage.oom_kills is not None:
                ooms.add_metric(label, usage.oom_kills)
            pids.add_metric(label, usage.pids)
        families["containers"].add_metric(["running"], running)
        families["containers"].add_metric(["stopped"], max(0, len(records) - running))
        if self.disk is not None and self.disk.sampled_at is not None:
            disk = families["disk"]
            for name, used in self.disk.bytes.items():
                if name in records:
                    disk.add_metric([name], used)
            families["disk_sampled"].add_metric([], self.disk.sampled_at)
        self._host(families)
        yield from families.values()

    def render(self) -> bytes:
        """What collect() yields, in Prometheus' text format, written in one pass: the agent's
        /metrics serves this (tuxio.common.metrics' `fast`). A Metric and a Sample object per
        value, then prometheus_client's generic writer, cost twice this for 1000 containers;
        the per-container series are formatted here at once (container names are LXC names of
        [a-z0-9-], nothing to escape), the few others by render_families. A test holds it
        equal to collect()."""
        families = self._families()
        per_container: dict[str, list[str]] = {key: [] for key in _PER_CONTAINER}
        cpu, memory, peak = per_container["cpu"], per_container["memory"], per_container["peak"]
        ooms, pids = per_container["oom"], per_container["pids"]
        records = self.service.records
        running = 0
        for name, usage in self._usages():
            running += 1
            label = f'{{container="{name}"}} '
            cpu.append(f"{label}{usage.cpu_seconds!r}\n")
            memory.append(f"{label}{usage.memory_bytes}\n")
            if usage.memory_peak_bytes is not None:
                peak.append(f"{label}{usage.memory_peak_bytes}\n")
            if usage.oom_kills is not None:
                ooms.append(f"{label}{usage.oom_kills}\n")
            pids.append(f"{label}{usage.pids}\n")
        families["containers"].add_metric(["running"], running)
        families["containers"].add_metric(["stopped"], max(0, len(records) - running))
        if self.disk is not None and self.disk.sampled_at is not None:
            per_container["disk"] = [
                f'{{container="{name}"}} {used}\n'
                for name, used in self.disk.bytes.items()
                if name in records
            ]
            families["disk_sampled"].add_metric([], self.disk.sampled_at)
        self._host(families)
        out: list[str] = []
        for key, family in families.items():
            lines = per_container.get(key)
            if lines is None:
                continue
            name = f"{family.name}_total" if family.type == "counter" else family.name
            out.append(f"# HELP {name} {family.documentation}\n# TYPE {name} {family.type}\n")
            out.extend([name + line for line in lines])
        rest = [family for key, family in families.items() if key not in per_container]
        return "".join(out).encode() + render_families(rest)

    def _usages(self) -> Iterator[tuple[str, CgroupUsage]]:
        """Each running container's usage, from its kept descriptors (opened for a
        container new to the agent's view, or whose init and so cgroup changed)."""
        driver = self.service.cgroups
        current = self.service.running_cgroups()
        for name in self._open.keys() - {name for name, _ in current}:
            self._open.pop(name).close()
        for name, files in current:
            kept = self._open.get(name)
            try:
                if kept is None or kept.files is not files:
                    if kept is not None:
                        self._open.pop(name).close()
                    try:
                        kept = self._open[name] = _UsageFiles(driver, files)
                    except OSError as exc:
                        if exc.errno != errno.EMFILE:
                            raise
                        yield name, driver.usage(files)  # out of descriptors: read as before
                        continue
                yield name, kept.read(driver)
            except (OSError, ControllerMissing, ValueError, KeyError):
                # Stopped since the agent last saw it: no series, and nothing kept open.
                gone = self._open.pop(name, None)
                if gone is not None:
                    gone.close()

    def close(self) -> None:
        for kept in self._open.values():
            kept.close()
        self._open.clear()

    def _host(self, families: dict[str, GaugeMetricFamily | CounterMetricFamily]) -> None:
        budget = self.service.output_budget
        families["held"].add_metric([], budget.used)
        families["budget"].add_metric([], budget.total)
        try:
            st = os.statvfs(self.service.lxc.lxcpath)
        except OSError:
            return
        families["free"].add_metric([], st.f_bavail * st.f_frsize)
        families["size"].add_metric([], st.f_blocks * st.f_frsize)
        families["ifree"].add_metric([], st.f_favail)
        families["inodes"].add_metric([], st.f_files)

    @staticmethod
    def _families() -> dict[str, GaugeMetricFamily | CounterMetricFamily]:
        def gauge(name: str, text: str, labels: list[str] | None = None) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, text, labels=_BY_CONTAINER if labels is None else labels)

        def host(name: str, text: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, text, labels=[])

        return {
            "cpu": CounterMetricFamily(
                "tuxio_agent_sandbox_cpu_seconds",
                "CPU time the container used (user and system), from its cgroup.",
                labels=_BY_CONTAINER,
            ),
            "memory": gauge(
                "tuxio_agent_sandbox_memory_bytes",
                "Memory the container's cgroup uses now (page cache included).",
            ),
            "peak": gauge(
                "tuxio_agent_sandbox_memory_peak_bytes",
                "The most memory the container's cgroup used since it started.",
            ),
            "oom": CounterMetricFamily(
                "tuxio_agent_sandbox_oom_kills",
                "Processes of the container the kernel killed for want of memory.",
                labels=_BY_CONTAINER,
            ),
            "pids": gauge(
                "tuxio_agent_sandbox_pids", "Processes and threads in the container now."
            ),
            "disk": gauge(
                "tuxio_agent_sandbox_disk_bytes",
                "Bytes allocated to the container's writable layer at the last walk.",
            ),
            "containers": gauge(
                "tuxio_agent_containers", "Containers on the host, by state.", ["state"]
            ),
            "disk_sampled": host(
                "tuxio_agent_sandbox_disk_sampled_timestamp_seconds",
                "When the last walk of the writable layers ended (Unix time).",
            ),
            "free": host(
                "tuxio_agent_host_disk_free_bytes",
                "Free bytes (for unprivileged use) on the filesystem of the containers.",
            ),
            "size": host(
                "tuxio_agent_host_disk_size_bytes", "Size of the filesystem of the containers."
            ),
            "ifree": host(
                "tuxio_agent_host_inodes_free",
                "Free inodes (for unprivileged use) on the filesystem of the containers.",
            ),
            "inodes": host(
                "tuxio_agent_host_inodes", "Inodes on the filesystem of the containers."
            ),
            "held": host(
                "tuxio_agent_output_held_bytes",
                "Output of all commands held in the agent now (sessions' unsent output and "
                "what one-shot execs reserved), against tuxio_agent_output_budget_bytes.",
            ),
            "budget": host(
                "tuxio_agent_output_budget_bytes",
                "The most output all commands together may hold in the agent.",
            ),
        }

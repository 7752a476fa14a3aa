"""Convergence: bring a container to its spec step by step, acting on what LXC reports.

Each PUT reads the container's record and LXC's view, then does only the steps that are
missing: clone, write config, start or stop, apply limits live, and finally reads everything
back from LXC, the cgroup files and /proc to verify and answer. A second identical PUT finds
nothing to do and writes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import cast, get_args

from tuxio.common.locks import KeyedLocks

from . import __version__
from .budget import OutputBudget
from .cgroups import CgroupDriver, CgroupFiles, CgroupLimits, CgroupReading, ControllerMissing
from .cpuset import allocate_cpuset, core_load, format_cpuset, parse_cpuset
from .disk import DiskBackend, DiskQuota, NoDiskLimit
from .errors import (
    AgentError,
    ContainerNotFound,
    ContainerNotRunning,
    ContainerQuarantined,
    DiskBelowReserve,
    HostPrerequisiteMissing,
    InvalidSpec,
    LimitsNotInForce,
    LxcCommandFailed,
    PreconditionFailed,
    SpecConflict,
)
from .host import CAP_SYS_RESOURCE, HostCpus, has_capability, meminfo
from .lxc import Lxc, LxcInfo
from .metrics import CLONE_SECONDS, START_SECONDS
from .models import (
    BurstStatus,
    ContainerSpec,
    ContainerState,
    ContainerStatus,
    CpuInfo,
    DiskInfo,
    DiskStatus,
    ExecRequest,
    ExecResult,
    HostInfo,
    MemoryInfo,
    ObservedLimits,
    QuarantinedContainer,
    TemplateInfo,
    Usage,
)
from .processes import InitProcess
from .records import (
    ContainerRecord,
    RecordCorrupt,
    read_record,
    render_config,
    spec_hash,
    write_atomically,
    write_record,
)
from .session_cgroups import SessionCgroup, session_cgroup
from .templates import Template, TemplateStore

__all__ = ["ANY", "ContainerService", "DiskPolicy"]

log = logging.getLogger(__name__)

_PAGE = os.sysconf("SC_PAGE_SIZE")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_RLIMITS = {"nofile": resource.RLIMIT_NOFILE, "nproc": resource.RLIMIT_NPROC}
# In a precondition: any existing container matches (If-Match: *).
ANY = "*"


@dataclass(frozen=True)
class DiskPolicy:
    """How the host's disk is handed out: the backend for new containers, the limits of a
    spec that names none, and the free space and inodes below which creation stops."""

    backend: DiskBackend
    default: DiskQuota
    reserve_bytes: int
    reserve_inodes: int


@dataclass(frozen=True)
class _Observed:
    info: LxcInfo
    files: CgroupFiles | None
    reading: CgroupReading | None
    rlimits: dict[str, int | None]
    started_at: datetime | None


class ContainerService:
    """The containers of one host."""

    def __init__(
        self,
        *,
        lxc: Lxc,
        cgroups: CgroupDriver,
        templates: TemplateStore,
        cpus: HostCpus,
        idmap_base: int,
        idmap_size: int,
        apparmor: bool,
        disk: DiskPolicy | None = None,
        other_disk_backends: Collection[DiskBackend] = (),
        stop_timeout: int = 5,
        output_budget: OutputBudget | None = None,
    ) -> None:
        self.lxc = lxc
        # What the commands of every container may hold of their output (budget.py).
        self.output_budget = output_budget or OutputBudget(256 * 2**20)
        self.cgroups = cgroups
        self.templates = templates
        self.cpus = cpus
        self.idmap_base = idmap_base
        self.idmap_size = idmap_size
        self.apparmor = apparmor
        self.stop_timeout = stop_timeout
        self.disk = disk or DiskPolicy(NoDiskLimit(), DiskQuota(2**30, 65536), 0, 0)
        # Every backend a record may name: containers keep the one they were made with.
        self._disk_backends = {b.name: b for b in (NoDiskLimit(), *other_disk_backends)}
        self._disk_backends[self.disk.backend.name] = self.disk.backend
        self.can_raise_rlimits = has_capability(CAP_SYS_RESOURCE)
        # Without CAP_SYS_RESOURCE, LXC cannot give a container more than the agent's own.
        self.rlimit_ceiling = {key: resource.getrlimit(which)[1] for key, which in _RLIMITS.items()}
        # Requests for one container are serialised, different containers run in parallel.
        self.locks = KeyedLocks()
        # A cache of the records on disk, rebuilt from them at start-up.
        self.records: dict[str, ContainerRecord] = {}
        # Containers whose record was corrupt at start, and why: neither run nor changed.
        self.quarantined: dict[str, str] = {}
        # Containers still on all shared cores, with the PID of their init.
        self._bursting: dict[str, int] = {}
        # Running containers' inits as LXC last named them: (pid, start time in ticks).
        self._inits: dict[str, tuple[int, int]] = {}
        # The cgroup directories of running containers, found once per init (see _files).
        self._cgroup_dirs: dict[str, tuple[int, CgroupFiles]] = {}
        # Containers lxc-destroy is working on.
        self._destroying: set[str] = set()
        # Called with a container's name before it stops or is destroyed (its terminals end).
        self.stop_hooks: list[Callable[[str], Awaitable[None]]] = []

    # ----- start-up ---------------------------------------------------------------------

    async def recover(self) -> None:
        """Rediscover every container from its record and LXC, and resume bursts."""
        self.lxc.lxcpath.mkdir(parents=True, exist_ok=True)
        for entry in sorted(self.lxc.lxcpath.iterdir()):
            try:
                record = read_record(entry) if entry.is_dir() else None
            except RecordCorrupt as exc:
                await self._quarantine(entry.name, str(exc))
                continue
            if record is not None:
                self.records[record.name] = record
            elif entry.is_dir() and not (entry / "config").exists():
                await asyncio.to_thread(self._remove_unfinished_clone, entry)
        for record in self.records.values():
            quota = _quota_of(record)
            if quota is not None:
                try:
                    self._backend_of(record).restore(self.lxc.lxcpath / record.name, quota)
                except AgentError:
                    log.exception("disk of %s cannot be restored", record.name)
        infos = await self.lxc.list_all() if self.records else {}
        for name, record in self.records.items():
            info = infos.get(name)
            if info and info.state == "running" and info.pid:
                ticks = _start_ticks(info.pid)
                if ticks is not None:
                    self._inits[name] = (info.pid, ticks)  # for _info, and for metrics
            if (
                info
                and info.state == "running"
                and info.pid
                and record.spec.limits.burst_cpu_seconds
            ):
                self._bursting[name] = info.pid
        log.info(
            "recovered %d containers (%d running, %d bursting)",
            len(self.records),
            sum(1 for i in infos.values() if i.state == "running"),
            len(self._bursting),
        )

    def _remove_unfinished_clone(self, directory: Path) -> None:
        """A directory with neither record nor LXC config is a clone the agent was stopped in
        the middle of (_clone writes the record before the config, and both last): nobody
        was told of it. Left, it would hold its disk image and make every PUT of that name
        fail with SpecConflict, so the Sandbox that wanted it could never get it."""
        log.warning("container %s: removing an unfinished clone", directory.name)
        for backend in self._disk_backends.values():
            with contextlib.suppress(AgentError, OSError):
                backend.release(directory)
        shutil.rmtree(directory, ignore_errors=True)

    async def _quarantine(self, name: str, reason: str) -> None:
        """A container the agent cannot know: stopped (its limits and owner are unknown), its
        files left as found, every call but DELETE refused with the reason."""
        log.error("container %s quarantined: %s", name, reason)
        self.quarantined[name] = reason
        try:
            if await self.lxc.info(name) is not None:
                await self.lxc.stop(name, timeout=0)
        except LxcCommandFailed as exc:
            log.error("container %s: could not stop it: %s", name, exc)

    def _refuse_quarantined(self, name: str) -> None:
        reason = self.quarantined.get(name)
        if reason is not None:
            raise ContainerQuarantined(
                f"container {name!r} is quarantined (its record is corrupt: {reason}); "
                "only DELETE is taken"
            )

    # ----- the API ----------------------------------------------------------------------

    async def put(
        self,
        name: str,
        spec: ContainerSpec,
        if_match: Collection[str] | None = None,
        if_none_match: Collection[str] | None = None,
    ) -> ContainerStatus:
        """Converge `name` to `spec`. With `if_match` (spec hashes, or ANY), only a container
        that exists and converged last to one of those specs is touched; with `if_none_match`,
        only one that does not exist (ANY) or converged to none of those. Checked and converged
        under the container's lock, so of two callers adopting one container only one wins."""
        self._refuse_quarantined(name)
        template = self.templates.get(spec.template)
        if spec.limits.cpus > len(self.cpus.shared):
            raise InvalidSpec(
                f"limits.cpus is {spec.limits.cpus} but this host shares only "
                f"{len(self.cpus.shared)} cores ({format_cpuset(self.cpus.shared)}) with containers"
            )
        if not self.can_raise_rlimits:
            for key, wanted in (("nofile", spec.limits.nofile), ("nproc", spec.limits.nproc)):
                ceiling = self.rlimit_ceiling[key]
                if ceiling != resource.RLIM_INFINITY and wanted > ceiling:
                    raise InvalidSpec(
                        f"limits.{key} is {wanted} but this agent runs without "
                        f"CAP_SYS_RESOURCE and can give at most its own limit, {ceiling}"
                    )
        async with self.locks.hold(name):
            self._check_preconditions(name, if_match, if_none_match)
            return await self._converge(name, spec, template)

    def _check_preconditions(
        self, name: str, if_match: Collection[str] | None, if_none_match: Collection[str] | None
    ) -> None:
        """RFC 9110 13.1: the container's ETag is the hash of the spec it converged to."""
        record = self.records.get(name)
        if if_match is not None:
            if record is None:
                raise PreconditionFailed(f"If-Match: no container {name!r} on this host")
            if ANY not in if_match and record.spec_hash not in if_match:
                raise PreconditionFailed(
                    f"If-Match: container {name!r} converged to spec {record.spec_hash}, not "
                    "to " + ", ".join(sorted(if_match))
                )
        if if_none_match is not None and record is not None:
            if ANY in if_none_match:
                raise PreconditionFailed(f"If-None-Match: container {name!r} exists")
            if record.spec_hash in if_none_match:
                raise PreconditionFailed(
                    f"If-None-Match: container {name!r} converged to spec {record.spec_hash}"
                )

    async def get(self, name: str) -> ContainerStatus:
        self._refuse_quarantined(name)
        record = self.records.get(name)
        if record is None:
            raise ContainerNotFound(f"no container {name!r} on this host")
        if name in self._destroying:
            raise ContainerNotFound(f"container {name!r} is being destroyed")
        info = await self._info(name) or LxcInfo("stopped", None)
        return self._status(record, await self._observe(name, info))

    async def find(self, selector: Mapping[str, str]) -> list[ContainerStatus]:
        chosen = [
            r
            for r in self.records.values()
            if r.name not in self._destroying
            and all(r.spec.labels.get(k) == v for k, v in selector.items())
        ]
        if not chosen:
            return []
        infos = await self._infos([r.name for r in chosen])
        statuses = []
        for record in sorted(chosen, key=lambda r: r.name):
            info = infos.get(record.name, LxcInfo("stopped", None))
            try:
                seen = await self._observe(record.name, info)
            except LxcCommandFailed:
                if record.name in self._destroying or record.name not in self.records:
                    continue  # being destroyed while the list was read: not in the answer
                raise
            statuses.append(self._status(record, seen))
        return statuses

    async def delete(self, name: str) -> bool:
        """Stop and destroy; True when there was something to delete."""
        async with self.locks.hold(name):
            directory = self.lxc.lxcpath / name
            self._bursting.pop(name, None)
            self._inits.pop(name, None)
            self._cgroup_dirs.pop(name, None)
            if not directory.exists():
                self.records.pop(name, None)
                self.quarantined.pop(name, None)
                return False
            log.info("destroy started: %s", name)
            # Gone for GET and lists from here on: read between the stop and the destroy, it
            # looked stopped, and an operator took the deleted container for one that died
            # (found by make test-slow: ContainerDied for a container deleted by hand).
            self._destroying.add(name)
            try:
                await self._before_stop(name)
                # A thread: the unmount writes the image's dirty metadata back.
                await asyncio.to_thread(self._release_disk, name)
                await self.lxc.destroy(name)
            except LxcCommandFailed:
                if await self.lxc.info(name) is not None:
                    raise
                # LXC no longer knows it (no config): what is left is only files.
                shutil.rmtree(directory)
            finally:
                self._destroying.discard(name)
            self.records.pop(name, None)
            self.quarantined.pop(name, None)
            log.info("destroy finished: %s", name)
            return True

    async def exec(self, name: str, request: ExecRequest) -> ExecResult:
        if name not in self.records:
            raise ContainerNotFound(f"no container {name!r} on this host")
        info = await self._info(name)
        if info is None or info.state != "running":
            raise ContainerNotRunning(f"container {name!r} is not running")
        stdin = None if request.stdin is None else request.stdin.encode()
        holds = 2 * request.max_output_bytes + len(stdin or b"")
        with self.output_budget.reserve(holds, "this exec"):
            result = await self.lxc.attach(
                name,
                request.argv,
                request.env,
                stdin,
                request.timeout_seconds,
                request.max_output_bytes,
                self.session_cgroup(name, f"exec-{uuid.uuid4().hex}"),
            )
        return ExecResult(
            exit_code=result.exit_code,
            stdout=result.stdout.decode(errors="replace"),
            stderr=result.stderr.decode(errors="replace"),
            stdout_truncated=result.stdout_truncated,
            stderr_truncated=result.stderr_truncated,
            timed_out=result.timed_out,
            duration_seconds=round(result.duration_seconds, 6),
        )

    def require(self, name: str) -> None:
        """ContainerNotFound unless the agent has a container of that name."""
        if name not in self.records:
            raise ContainerNotFound(f"no container {name!r} on this host")

    async def running_init(self, name: str) -> InitProcess:
        """The init of a running container (PID and start time, which tell a recycled PID
        apart); ContainerNotFound or ContainerNotRunning otherwise."""
        if name not in self.records:
            raise ContainerNotFound(f"no container {name!r} on this host")
        info = await self._info(name)
        ticks = _start_ticks(info.pid) if info and info.state == "running" and info.pid else None
        if info is None or info.pid is None or ticks is None:
            raise ContainerNotRunning(f"container {name!r} is not running")
        return InitProcess(info.pid, ticks)

    def session_cgroup(self, name: str, session_id: str) -> SessionCgroup:
        """A new cgroup for one attached command of a running container (see
        session_cgroups); ContainerNotRunning when it does not run."""
        known = self._inits.get(name)
        if known is None or _start_ticks(known[0]) != known[1]:
            raise ContainerNotRunning(f"container {name!r} is not running")
        try:
            return session_cgroup(known[0], name, session_id)
        except ControllerMissing as exc:
            raise HostPrerequisiteMissing(f"cannot make a cgroup for the command: {exc}") from exc
        except FileNotFoundError:
            raise ContainerNotRunning(f"container {name!r} is not running") from None

    def processes(self, name: str) -> list[int]:
        """The host PIDs of a running container's processes (its cgroup.procs, and those of
        the cgroups below: the sessions'); empty when it does not run. Read afresh on every
        call."""
        known = self._inits.get(name)
        if known is None or _start_ticks(known[0]) != known[1]:
            return []
        try:
            return _procs(self._files(known[0], name))
        except (OSError, ControllerMissing):
            return []

    async def _before_stop(self, name: str) -> None:
        for hook in self.stop_hooks:
            try:
                await hook(name)
            except Exception:  # ending sessions must not keep a container from stopping
                log.exception("before stopping %s", name)

    async def host_info(self) -> HostInfo:
        infos = await self._infos(list(self.records))
        memory = meminfo()
        load = os.getloadavg()
        return HostInfo(
            version=__version__,
            cgroup_version=2 if self.cgroups.version == 2 else 1,
            apparmor=self.apparmor,
            cpus=CpuInfo(
                total=len(self.cpus.available),
                reserved=self.cpus.reserved,
                shared=self.cpus.shared,
                allocation={str(core): n for core, n in self._core_load().items()},
            ),
            memory=MemoryInfo(
                total_bytes=memory.get("MemTotal", 0),
                available_bytes=memory.get("MemAvailable", 0),
            ),
            disk=self.disk_info(),
            templates=[
                TemplateInfo(name=t.name, built_at=t.built_at, size_bytes=t.size_bytes, init=t.init)
                for t in self.templates.all()
            ],
            containers=len(self.records),
            running=sum(1 for n, i in infos.items() if n in self.records and i.state == "running"),
            load=(round(load[0], 2), round(load[1], 2), round(load[2], 2)),
            quarantined=[
                QuarantinedContainer(name=n, reason=r) for n, r in sorted(self.quarantined.items())
            ],
        )

    def disk_info(self) -> DiskInfo:
        """The data directory's filesystem and the disk policy (one statvfs)."""
        info = os.statvfs(self.lxc.lxcpath)
        free_bytes, free_inodes = info.f_bavail * info.f_frsize, info.f_favail
        return DiskInfo(
            path=str(self.lxc.lxcpath),
            backend=self.disk.backend.name,
            total_bytes=info.f_blocks * info.f_frsize,
            free_bytes=free_bytes,
            total_inodes=info.f_files,
            free_inodes=free_inodes,
            reserve_bytes=self.disk.reserve_bytes,
            reserve_inodes=self.disk.reserve_inodes,
            default_bytes=self.disk.default.bytes,
            default_inodes=self.disk.default.inodes,
            allocated_bytes=sum(r.disk_bytes or 0 for r in self.records.values()),
            below_reserve=free_bytes < self.disk.reserve_bytes
            or free_inodes < self.disk.reserve_inodes,
        )

    def _check_reserve(self) -> None:
        disk = self.disk_info()
        if disk.below_reserve:
            raise DiskBelowReserve(
                f"the data directory {disk.path} has {disk.free_bytes} bytes and "
                f"{disk.free_inodes} inodes free, below the reserve of {disk.reserve_bytes} "
                f"bytes and {disk.reserve_inodes} inodes: no new container until some are freed"
            )

    def _quota_for(self, spec: ContainerSpec, made: DiskQuota | None = None) -> DiskQuota:
        """The limits a spec asks for: a limit it leaves out is the host's default for a new
        container, and what an existing one was made with (a changed default leaves it)."""
        default = made or self.disk.default
        return DiskQuota(
            spec.limits.disk if spec.limits.disk is not None else default.bytes,
            spec.limits.inodes if spec.limits.inodes is not None else default.inodes,
        )

    def _backend_of(self, record: ContainerRecord) -> DiskBackend:
        return self._disk_backends.get(record.disk_backend) or self._disk_backends["none"]

    def _release_disk(self, name: str) -> None:
        """Detach the writable layer's limits before its directory goes (every backend a
        record may name is asked: a directory without a record may still hold a mount)."""
        record = self.records.get(name)
        backends = [self._backend_of(record)] if record else self._disk_backends.values()
        for backend in backends:
            backend.release(self.lxc.lxcpath / name)

    def _disk_status(self, record: ContainerRecord) -> DiskStatus:
        quota = _quota_of(record)
        usage = (
            None
            if quota is None
            else self._backend_of(record).usage(self.lxc.lxcpath / record.name, quota)
        )
        return DiskStatus(
            backend=record.disk_backend if quota is not None else "none",
            limit_bytes=usage.limit_bytes if usage else None,
            used_bytes=usage.used_bytes if usage else None,
            limit_inodes=usage.limit_inodes if usage else None,
            used_inodes=usage.used_inodes if usage else None,
        )

    # ----- convergence ------------------------------------------------------------------

    async def _converge(
        self, name: str, spec: ContainerSpec, template: Template
    ) -> ContainerStatus:
        directory = self.lxc.lxcpath / name
        record = self.records.get(name)
        info = await self._info(name) if record is not None else None
        if record is not None and info is None:
            # The record survived but LXC lost the container (its config is gone): start over.
            log.warning("container %s has a record but LXC does not know it; recreating", name)
            self._release_disk(name)
            shutil.rmtree(directory)
            self.records.pop(name, None)
            record = None
        if record is None:
            if directory.exists():
                raise SpecConflict(f"{directory} exists and is not a container of tuxio-agent")
            self._check_reserve()
            record = await self._clone(name, spec, template)
            info = LxcInfo("stopped", None)
        elif record.template != spec.template:
            raise SpecConflict(
                f"container {name!r} was cloned from template {record.template!r}; the template "
                "cannot change in place: delete the container and create it again"
            )
        elif record.spec.network != spec.network:
            raise SpecConflict(f"container {name!r}: the network cannot change in place")
        elif (wanted_disk := self._quota_for(spec, _quota_of(record))) != _quota_of(record) and (
            record.disk_bytes is not None
        ):
            raise SpecConflict(
                f"container {name!r} was made with a disk of {record.disk_bytes} bytes and "
                f"{record.disk_inodes} inodes; {wanted_disk.bytes} bytes and "
                f"{wanted_disk.inodes} inodes cannot be had in place: delete the container "
                "and create it again"
            )
        elif record.spec_hash != (wanted_hash := spec_hash(spec)):
            assert info is not None
            record = self._reconfigure(record, spec, wanted_hash, running=info.state == "running")
        assert info is not None

        observed: _Observed | None = None
        if spec.state == "running":
            if info.state != "running":
                info = await self._start(name)
            else:
                assert info.pid is not None
                observed = self._apply_live(name, record, info.pid)
        elif info.state != "stopped":
            log.info("stop started: %s", name)
            await self._before_stop(name)
            await self.lxc.stop(name, self.stop_timeout)
            self._bursting.pop(name, None)
            info = await self._info(name) or LxcInfo("stopped", None)
            log.info("stop finished: %s", name)

        if observed is None:
            observed = await self._observe(name, info)
        self._verify(record, observed)
        return self._status(record, observed)

    async def _clone(self, name: str, spec: ContainerSpec, template: Template) -> ContainerRecord:
        """An overlay snapshot of the template, laid out as `lxc-copy -s -B overlay` does,
        its writable layer (overlay/) limited by the disk backend.

        Writing the directories and config directly saves lxc-copy's process start on the
        hot path; LXC mounts the overlay itself at start.
        """
        directory = self.lxc.lxcpath / name
        cpuset = format_cpuset(allocate_cpuset(name, spec.limits.cpus, self._core_load()))
        record = ContainerRecord(
            name=name,
            template=template.name,
            template_rootfs=template.rootfs,
            spec=spec,
            spec_hash=spec_hash(spec),
            cpuset=cpuset,
            created_at=datetime.now(UTC),
            disk_backend=self.disk.backend.name,
            disk_bytes=(quota := self._quota_for(spec)).bytes,
            disk_inodes=quota.inodes,
        )
        # Taken before the first await, so concurrent creates see each other's cores.
        self.records[name] = record
        log.info("clone started: %s from %s", name, template.rootfs)
        began = time.perf_counter()
        try:
            directory.mkdir(mode=0o770)
            (directory / "rootfs").mkdir(mode=0o755)
            for path in (directory, directory / "rootfs"):
                os.chown(path, self.idmap_base, self.idmap_base)
            started = time.monotonic()
            # A thread: the first container of a new size waits for mkfs.
            await asyncio.to_thread(self.disk.backend.prepare, directory, quota, self.idmap_base)
            log.debug("disk of %s ready in %.1f ms", name, (time.monotonic() - started) * 1e3)
            self._write(directory, record)
        except BaseException:
            self.records.pop(name, None)
            with contextlib.suppress(AgentError, OSError):
                self.disk.backend.release(directory)
            shutil.rmtree(directory, ignore_errors=True)
            raise
        CLONE_SECONDS.labels(template.name).observe(time.perf_counter() - began)
        log.info("clone finished: %s on cores %s", name, cpuset)
        return record

    def _reconfigure(
        self, record: ContainerRecord, spec: ContainerSpec, wanted_hash: str, running: bool
    ) -> ContainerRecord:
        """A new spec for an existing container: its record now, and its LXC config now if it
        is stopped. A running container takes its new limits live (_apply_live) and reads its
        config only at its next start, which renders it first (_start): one file written on
        the hot path of a claim instead of two."""
        cpuset = record.cpuset
        if len(parse_cpuset(cpuset)) != spec.limits.cpus:
            load = self._core_load(exclude=record.name)
            cpuset = format_cpuset(allocate_cpuset(record.name, spec.limits.cpus, load))
        updated = ContainerRecord(
            name=record.name,
            template=record.template,
            template_rootfs=record.template_rootfs,
            spec=spec,
            spec_hash=wanted_hash,
            cpuset=cpuset,
            created_at=record.created_at,
            disk_backend=record.disk_backend,
            disk_bytes=record.disk_bytes,
            disk_inodes=record.disk_inodes,
        )
        self._write(self.lxc.lxcpath / record.name, updated, config=not running)
        self.records[record.name] = updated
        log.info(
            "reconfigured %s (spec %s -> %s)", record.name, record.spec_hash, updated.spec_hash
        )
        return updated

    def _write(self, directory: Path, record: ContainerRecord, config: bool = True) -> None:
        # The record first: a config without a record would be a container nobody owns.
        write_record(directory, record)
        if config:
            write_atomically(directory / "config", self._config(directory, record))

    def _config(self, directory: Path, record: ContainerRecord) -> str:
        # The container keeps the template version it was cloned from, even once rebuilt.
        template = self.templates.version_at(record.template, record.template_rootfs)
        return render_config(
            name=record.name,
            container_dir=directory,
            template=template,
            spec=record.spec,
            cgroup_lines=self.cgroups.config_lines(self._cgroup_limits(record, cpu_seconds=0.0)),
            idmap_base=self.idmap_base,
            idmap_size=self.idmap_size,
            apparmor=self.apparmor,
        )

    async def _start(self, name: str) -> LxcInfo:
        log.info("start started: %s", name)
        # The config a running container's reconfiguration left for its next start.
        directory = self.lxc.lxcpath / name
        wanted = self._config(directory, self.records[name])
        try:
            current = (directory / "config").read_text()
        except FileNotFoundError:
            current = None
        if current != wanted:
            write_atomically(directory / "config", wanted)
        began = time.perf_counter()
        try:
            init = await self.lxc.start(name)
        except LxcCommandFailed as exc:
            raise LxcCommandFailed(f"{exc.message}\n{self._log_tail(name)}".strip()) from None
        ticks = _start_ticks(init) if init is not None else None
        if init is not None and ticks is not None:
            self._inits[name] = (init, ticks)  # _info answers from it, no lxc-info spawned
        else:
            self._inits.pop(name, None)
        info = await self._info(name)
        if info is None or info.state != "running" or info.pid is None:
            raise LxcCommandFailed(
                f"container {name!r} did not reach RUNNING ({info.state if info else 'gone'})\n"
                f"{self._log_tail(name)}".strip()
            )
        record = self.records[name]
        START_SECONDS.labels(record.template).observe(time.perf_counter() - began)
        if record.spec.limits.burst_cpu_seconds > 0:
            self._bursting[name] = info.pid
        log.info("start finished: %s (pid %d)", name, info.pid)
        return info

    def _log_tail(self, name: str, lines: int = 8) -> str:
        try:
            text = (self.lxc.lxcpath / name / "lxc.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _apply_live(self, name: str, record: ContainerRecord, pid: int) -> _Observed | None:
        """Write only the limits that differ from what is in force; nothing when none do.
        When none did, what was read to decide is what is in force: returned, so the answer
        does not read the same files again (else None: the answer reads them back)."""
        files = self._files(pid, name)
        reading = self.cgroups.read(files)
        wanted = self._cgroup_limits(record, reading.cpu_seconds)
        plan = self.cgroups.live_plan(reading, wanted)
        for key, value in plan:
            files.set(key, value)
        limits = record.spec.limits
        in_force = _read_rlimits(pid)
        rlimit_changes = {
            _RLIMITS[key]: wanted
            for key, wanted in (("nofile", limits.nofile), ("nproc", limits.nproc))
            if in_force.get(key) != wanted and self._rlimit_live(in_force.get(key), wanted)
        }
        for member in _procs(files) if rlimit_changes else []:
            for which, limit in rlimit_changes.items():
                with contextlib.suppress(ProcessLookupError):
                    resource.prlimit(member, which, (limit, limit))
        if plan or rlimit_changes:
            log.info("limits applied live: %s %s rlimits %s", name, dict(plan), rlimit_changes)
        if limits.burst_cpu_seconds > 0 and reading.cpu_seconds < limits.burst_cpu_seconds:
            self._bursting[name] = pid
        else:
            self._bursting.pop(name, None)
        if plan or rlimit_changes:
            return None
        try:
            started = _started_at(pid)
        except OSError:
            return None  # it stopped meanwhile: the answer asks again (_observe)
        return _Observed(LxcInfo("running", pid), files, reading, in_force, started)

    def _rlimit_live(self, in_force: int | None, wanted: int) -> bool:
        """Whether an rlimit can change on running processes.

        Lowering always can; raising a hard limit needs CAP_SYS_RESOURCE on the host, which
        some agents run without (in a restricted sandbox, say). Then it waits for a restart.
        """
        return self.can_raise_rlimits or (in_force is not None and wanted <= in_force)

    def _cgroup_limits(self, record: ContainerRecord, cpu_seconds: float) -> CgroupLimits:
        """The cgroup limits a container should have after using `cpu_seconds` of CPU."""
        limits = record.spec.limits
        bursting = limits.burst_cpu_seconds > 0 and cpu_seconds < limits.burst_cpu_seconds
        return CgroupLimits(
            cpuset=format_cpuset(self.cpus.shared) if bursting else record.cpuset,
            cpu_quota=limits.cpu_quota,
            memory=_page_align(limits.memory),
            memory_swap=_page_align(limits.memory_swap_bytes)
            if self.cgroups.swap_accounting
            else None,
            pids=limits.pids,
        )

    def _core_load(self, exclude: str | None = None) -> dict[int, int]:
        return core_load(
            (parse_cpuset(r.cpuset) for n, r in self.records.items() if n != exclude),
            self.cpus.shared,
        )

    # ----- observation ------------------------------------------------------------------

    async def _info(self, name: str) -> LxcInfo | None:
        """LXC's view of one container (None: LXC does not know it).

        A container runs exactly as long as its init does, and a PID with the start time it
        had is that very process: while the init LXC last named is alive, the answer is known
        without asking again. lxc-info is a process spawn, most of the cost of a no-op PUT.
        """
        known = self._inits.get(name)
        if known is not None:
            if _start_ticks(known[0]) == known[1]:
                return LxcInfo("running", known[0])
            del self._inits[name]
        info = await self.lxc.info(name)
        ticks = _start_ticks(info.pid) if info and info.state == "running" and info.pid else None
        if info is not None and info.pid is not None and ticks is not None:
            self._inits[name] = (info.pid, ticks)
        return info

    def running_cgroups(self) -> list[tuple[str, CgroupFiles]]:
        """The cgroup files of each container whose init the agent knows (from its start,
        its last observation or the recovery at start-up), for metrics: no process is
        spawned and nothing is awaited. A container that stopped since answers no more
        reads; its caller skips it."""
        found: list[tuple[str, CgroupFiles]] = []
        for name, (pid, _) in list(self._inits.items()):
            try:
                found.append((name, self._files(pid, name)))
            except (OSError, ControllerMissing, ValueError):
                continue
        return found

    def _files(self, pid: int, name: str) -> CgroupFiles:
        """The cgroup files of the container whose init is `pid`: located through /proc once
        per init, since a container's cgroup does not move while its init lives."""
        cached = self._cgroup_dirs.get(name)
        if cached is not None and cached[0] == pid:
            return cached[1]
        files = self.cgroups.files_for(pid, name)
        self._cgroup_dirs[name] = (pid, files)
        return files

    async def _infos(self, names: list[str]) -> dict[str, LxcInfo]:
        """LXC's view of several containers: those whose init is the very process LXC last
        named are running (see _info); for the others one lxc-ls answers for all, and none
        is spawned when every one of them is known to run (a probe of a host full of
        running sandboxes costs no process at all)."""
        infos: dict[str, LxcInfo] = {}
        unknown = False
        for name in names:
            known = self._inits.get(name)
            if known is not None and _start_ticks(known[0]) == known[1]:
                infos[name] = LxcInfo("running", known[0])
            else:
                unknown = True
        if not unknown:
            return infos
        listed = await self.lxc.list_all()
        for name in names:
            if name in infos:
                continue
            info = listed.get(name)
            if info is None:
                continue
            infos[name] = info
            ticks = _start_ticks(info.pid) if info.state == "running" and info.pid else None
            if info.pid is not None and ticks is not None:
                self._inits[name] = (info.pid, ticks)
            else:
                self._inits.pop(name, None)
        return infos

    async def _observe(self, name: str, info: LxcInfo) -> _Observed:
        if info.state != "running" or info.pid is None:
            return _Observed(info, None, None, {}, None)
        try:
            files = self._files(info.pid, name)
            return _Observed(
                info,
                files,
                self.cgroups.read(files),
                _read_rlimits(info.pid),
                _started_at(info.pid),
            )
        except (OSError, ControllerMissing, ValueError):
            # It stopped between LXC's answer and our reading: ask LXC again.
            self._inits.pop(name, None)
            fresh = await self._info(name) or LxcInfo("stopped", None)
            if fresh.state == "running" and fresh.pid != info.pid:
                return await self._observe(name, fresh)
            return _Observed(LxcInfo("stopped", None), None, None, {}, None)

    def _status(self, record: ContainerRecord, seen: _Observed) -> ContainerStatus:
        reading = seen.reading
        limits = record.spec.limits
        burst = None
        if limits.burst_cpu_seconds > 0:
            burst = BurstStatus(
                active=reading is not None and reading.cpuset != record.cpuset,
                cpu_seconds=limits.burst_cpu_seconds,
                assigned_cpuset=record.cpuset,
            )
        return ContainerStatus(
            name=record.name,
            state=_state(seen.info.state),
            pid=seen.info.pid if reading else None,
            template=record.template,
            labels=record.spec.labels,
            spec_hash=record.spec_hash,
            spec=record.spec,
            created_at=record.created_at,
            started_at=seen.started_at,
            limits=None
            if reading is None
            else ObservedLimits(
                cpuset=reading.cpuset,
                cpus=len(parse_cpuset(reading.cpuset)),
                cpu_quota=reading.cpu_quota,
                memory=reading.memory,
                memory_swap=reading.memory_swap,
                pids=reading.pids,
                nofile=seen.rlimits.get("nofile"),
                nproc=seen.rlimits.get("nproc"),
            ),
            burst=burst,
            disk=self._disk_status(record),
            warnings=self._warnings(record, seen),
            usage=None
            if reading is None
            else Usage(
                cpu_seconds=round(reading.cpu_seconds, 6),
                memory_bytes=reading.memory_bytes,
                memory_peak_bytes=reading.memory_peak_bytes,
                pids=reading.pids_current,
            ),
        )

    def _warnings(self, record: ContainerRecord, seen: _Observed) -> list[str]:
        if seen.reading is None:
            return []
        warnings = []
        limits = record.spec.limits
        for key, wanted in (("nofile", limits.nofile), ("nproc", limits.nproc)):
            current = seen.rlimits.get(key)
            if current != wanted and not self._rlimit_live(current, wanted):
                warnings.append(
                    f"{key} {wanted} applies at the next start: {current} is in force, and "
                    "raising a hard rlimit of running processes needs CAP_SYS_RESOURCE, "
                    "which this agent lacks"
                )
        return warnings

    def _verify(self, record: ContainerRecord, seen: _Observed) -> None:
        spec = record.spec
        if spec.state == "stopped":
            if seen.info.state != "stopped":
                raise LxcCommandFailed(f"container {record.name!r} is still {seen.info.state}")
            return
        if seen.reading is None:
            raise LxcCommandFailed(f"container {record.name!r} stopped right after it started")
        wanted = self._cgroup_limits(record, seen.reading.cpu_seconds)
        reading = seen.reading
        problems = []
        if reading.cpuset != wanted.cpuset:
            problems.append(f"cpuset {reading.cpuset} instead of {wanted.cpuset}")
        if (reading.cpu_quota is None) != (wanted.cpu_quota is None) or (
            reading.cpu_quota is not None
            and wanted.cpu_quota is not None
            and abs(reading.cpu_quota - wanted.cpu_quota) > 1e-5
        ):
            problems.append(f"cpu quota {reading.cpu_quota} instead of {wanted.cpu_quota}")
        if reading.memory != wanted.memory:
            problems.append(f"memory {reading.memory} instead of {wanted.memory}")
        if wanted.memory_swap is not None and reading.memory_swap != wanted.memory_swap:
            problems.append(f"memory+swap {reading.memory_swap} instead of {wanted.memory_swap}")
        if reading.pids != wanted.pids:
            problems.append(f"pids {reading.pids} instead of {wanted.pids}")
        for key, value in (("nofile", spec.limits.nofile), ("nproc", spec.limits.nproc)):
            current = seen.rlimits.get(key)
            if current != value and self._rlimit_live(current, value):
                problems.append(f"{key} {current} instead of {value}")
        if problems:
            raise LimitsNotInForce(f"container {record.name!r}: " + "; ".join(problems))

    # ----- burst ------------------------------------------------------------------------

    async def watch_bursts(self, interval: float) -> None:
        """Narrow bursting containers to their own cores once they used their CPU seconds."""
        while True:
            await asyncio.sleep(interval)
            for name, pid in list(self._bursting.items()):
                try:
                    await self._check_burst(name, pid)
                except Exception:  # one container's trouble must not stop the others' narrowing
                    log.exception("burst check of %s failed", name)

    async def _check_burst(self, name: str, pid: int) -> None:
        record = self.records.get(name)
        if record is None:
            self._bursting.pop(name, None)
            return
        try:
            files = self._files(pid, name)
            used = self.cgroups.read(files).cpu_seconds
        except (OSError, ControllerMissing, ValueError):
            self._bursting.pop(name, None)  # gone; a restart registers it again
            return
        if used < record.spec.limits.burst_cpu_seconds:
            return
        async with self.locks.hold(name):
            if self._bursting.get(name) != pid:
                return
            record = self.records.get(name)
            if record is not None:
                self._apply_live(name, record, pid)
            self._bursting.pop(name, None)
            log.info(
                "burst over: %s narrowed to cores %s after %.1f CPU seconds",
                name,
                record.cpuset if record else "?",
                used,
            )


def _quota_of(record: ContainerRecord) -> DiskQuota | None:
    if record.disk_bytes is None or record.disk_inodes is None:
        return None
    return DiskQuota(record.disk_bytes, record.disk_inodes)


def _state(text: str) -> ContainerState:
    return cast(ContainerState, text) if text in get_args(ContainerState) else "stopped"


def _page_align(value: int) -> int:
    return value - value % _PAGE


def _procs(files: CgroupFiles) -> list[int]:
    directory = files.dirs.get("") or files.dirs.get("pids")
    if directory is None:
        return []
    found: list[int] = []
    # The container's cgroup and those below it: the sessions' (session_cgroups), LXC's .lxc
    # leaf on v2, an init's own.
    for below, _, _ in os.walk(directory):
        with contextlib.suppress(OSError):
            found += [int(p) for p in (Path(below) / "cgroup.procs").read_text().split()]
    return found


def _read_rlimits(pid: int) -> dict[str, int | None]:
    """Hard NOFILE and NPROC limits of a process, from /proc/<pid>/limits."""
    names = {"Max open files": "nofile", "Max processes": "nproc"}
    found: dict[str, int | None] = {}
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        for label, key in names.items():
            if line.startswith(label):
                hard = line[len(label) :].split()[1]
                found[key] = None if hard == "unlimited" else int(hard)
    return found


def _start_ticks(pid: int) -> int | None:
    """A process's start time in clock ticks since boot (None: no such process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # Field 22; the command name in field 2 may hold spaces and parentheses, hence rsplit.
    return int(stat.rsplit(")", 1)[1].split()[19])


def _started_at(pid: int) -> datetime:
    """When a process started: its start time in /proc is in clock ticks since boot."""
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    ticks = _start_ticks(pid)
    if ticks is None:
        raise ProcessLookupError(pid)
    age = max(0.0, uptime - ticks / _CLOCK_TICKS)
    return datetime.fromtimestamp(time.time() - age, UTC).replace(microsecond=0)

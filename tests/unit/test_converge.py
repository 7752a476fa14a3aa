"""The agent's convergence (ContainerService._converge through put) against a fake of LXC at
its interface: the fake keeps containers in the LXC path the service writes, and "starts" one
as LXC would from its config: a real process with the config's rlimits as its init, and cgroup
files (a v2 tree in a temporary directory) with the config's values. So the steps the service
takes (clone, config, start, live limits, stop, verify) and the calls it makes are checked
without LXC or root cgroups."""

from __future__ import annotations

import asyncio
import json
import re
import resource
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tuxio.nodeagent.cgroups import CgroupFiles, CgroupV2
from tuxio.nodeagent.errors import (
    ContainerNotFound,
    LimitsNotInForce,
    LxcCommandFailed,
    SpecConflict,
)
from tuxio.nodeagent.host import HostCpus
from tuxio.nodeagent.lxc import LxcInfo
from tuxio.nodeagent.models import ContainerSpec
from tuxio.nodeagent.service import ContainerService
from tuxio.nodeagent.templates import TemplateStore

_RLIMITS = {"nofile": resource.RLIMIT_NOFILE, "nproc": resource.RLIMIT_NPROC}


class FakeLxc:
    """LXC at the service's interface: info, list_all, start, stop, destroy."""

    def __init__(self, lxcpath: Path, cgroups: Path) -> None:
        self.lxcpath = lxcpath
        self.cgroups = cgroups
        self.calls: list[tuple[str, str]] = []
        self.inits: dict[str, asyncio.subprocess.Process] = {}
        self.cgroup_override: dict[str, str] = {}  # values the "kernel" writes instead
        self.fail_start = False
        self.hold_destroy: asyncio.Event | None = None
        self.destroy_stopped = asyncio.Event()

    def _known(self, name: str) -> bool:
        return (self.lxcpath / name / "config").exists()

    def _state(self, name: str) -> LxcInfo:
        init = self.inits.get(name)
        if init is not None and init.returncode is None:
            return LxcInfo("running", init.pid)
        return LxcInfo("stopped", None)

    async def info(self, name: str) -> LxcInfo | None:
        self.calls.append(("info", name))
        return self._state(name) if self._known(name) else None

    async def list_all(self) -> dict[str, LxcInfo]:
        self.calls.append(("list", ""))
        return {d.name: self._state(d.name) for d in self.lxcpath.iterdir() if self._known(d.name)}

    async def start(self, name: str) -> int | None:
        self.calls.append(("start", name))
        if self.fail_start:
            raise LxcCommandFailed(f"lxc-start {name} failed")
        config = (self.lxcpath / name / "config").read_text()
        values = dict(re.findall(r"^(lxc\.[\w.]+) = (.*)$", config, re.MULTILINE))
        limits = {k: int(values[f"lxc.prlimit.{k}"]) for k in _RLIMITS}

        def confine() -> None:
            for key, which in _RLIMITS.items():
                resource.setrlimit(which, (limits[key], limits[key]))

        init = await asyncio.create_subprocess_exec("sleep", "600", preexec_fn=confine)
        self.inits[name] = init
        directory = self.cgroups / name
        directory.mkdir(parents=True, exist_ok=True)
        files = {
            k.removeprefix("lxc.cgroup2."): v
            for k, v in values.items()
            if k.startswith("lxc.cgroup2.")
        }
        files.update(self.cgroup_override)
        files.update(
            {
                "cpu.stat": "usage_usec 250000",
                "memory.current": "4096",
                "pids.current": "1",
                "cgroup.procs": str(init.pid),
            }
        )
        for key, value in files.items():
            (directory / key).write_text(value)
        return init.pid

    async def stop(self, name: str, timeout: int = 5) -> None:
        self.calls.append(("stop", name))
        await self.kill(name)

    async def destroy(self, name: str) -> None:
        self.calls.append(("destroy", name))
        await self.kill(name)
        if self.hold_destroy is not None:  # stopped, not yet removed: as lxc-destroy -f is
            self.destroy_stopped.set()
            await self.hold_destroy.wait()
        shutil.rmtree(self.lxcpath / name)

    async def kill(self, name: str) -> None:
        """The container's init ends (stopped, or died behind the agent's back)."""
        init = self.inits.pop(name, None)
        if init is not None:
            init.kill()
            await init.wait()

    async def close(self) -> None:
        for name in list(self.inits):
            await self.kill(name)


class TreeCgroups(CgroupV2):
    """cgroup v2 files under a temporary directory, one directory per container."""

    def files_for(self, pid: int, name: str) -> CgroupFiles:
        return CgroupFiles({"": self.root / name})


@pytest.fixture
async def lxc(tmp_path: Path) -> AsyncIterator[FakeLxc]:
    fake = FakeLxc(tmp_path / "containers", tmp_path / "cgroup")
    fake.lxcpath.mkdir()
    yield fake
    await fake.close()


@pytest.fixture
def service(tmp_path: Path, lxc: FakeLxc) -> ContainerService:
    for template in ("busybox", "debian"):
        version = tmp_path / "templates" / template / "versions" / "v1"
        (version / "rootfs").mkdir(parents=True)
        meta = {
            "builtAt": "2026-01-01T00:00:00+00:00",
            "sizeBytes": 1,
            "init": ["/sbin/init"],
            "haltSignal": "SIGUSR1",
        }
        (version / "template.json").write_text(json.dumps(meta))
        (tmp_path / "templates" / template / "current").symlink_to("versions/v1")
    return ContainerService(
        lxc=lxc,  # type: ignore[arg-type]
        cgroups=TreeCgroups(tmp_path / "cgroup", swap_accounting=False),
        templates=TemplateStore(tmp_path / "templates", 100000, 65536),
        cpus=HostCpus(available=[0, 1, 2], reserved=[0], shared=[1, 2]),
        idmap_base=100000,
        idmap_size=65536,
        apparmor=False,
    )


def spec(state: str = "running", **limits: Any) -> ContainerSpec:
    return ContainerSpec.model_validate(
        {
            "state": state,
            "template": "busybox",
            "limits": {
                "cpus": 1,
                "memory": "64Mi",
                "pids": 64,
                "nofile": 1024,
                "nproc": 512,
                **limits,
            },
            "labels": {"tux.io/sandbox-uid": "u1"},
        }
    )


def cgroup(tmp_path: Path, name: str, key: str) -> str:
    return (tmp_path / "cgroup" / name / key).read_text()


async def test_a_new_container_is_cloned_configured_and_started(
    service: ContainerService, lxc: FakeLxc, tmp_path: Path
) -> None:
    status = await service.put("c1", spec())
    assert lxc.calls == [("start", "c1")]  # no lxc-info after a start: LXC's own tree told
    directory = lxc.lxcpath / "c1"
    assert {p.name for p in directory.iterdir()} >= {"rootfs", "overlay", "config", "tuxio.json"}
    assert directory.stat().st_uid == 100000  # owned by the container's root
    config = (directory / "config").read_text()
    assert f"lxc.rootfs.path = overlay:{tmp_path}/templates/busybox/versions/v1/rootfs" in config
    assert "lxc.cgroup2.memory.max = 67108864" in config
    assert status.state == "running"
    assert status.limits is not None
    assert (status.limits.memory, status.limits.pids, status.limits.nofile) == (
        64 * 2**20,
        64,
        1024,
    )
    assert status.limits.cpuset in ("1", "2")
    assert status.usage is not None and status.usage.cpu_seconds == 0.25
    assert status.started_at is not None and status.started_at <= datetime.now(UTC)


async def test_the_same_spec_again_does_nothing(service: ContainerService, lxc: FakeLxc) -> None:
    first = await service.put("c1", spec())
    config = lxc.lxcpath / "c1" / "config"
    written = config.stat().st_mtime_ns
    lxc.calls.clear()
    again = await service.put("c1", spec())
    assert lxc.calls == []  # no lxc tool run: the init LXC named is still alive
    assert config.stat().st_mtime_ns == written  # not even the config rewritten
    assert again.spec_hash == first.spec_hash


async def test_new_limits_go_live_and_the_config_waits_for_the_next_start(
    service: ContainerService, lxc: FakeLxc, tmp_path: Path
) -> None:
    await service.put("c1", spec())
    config = (lxc.lxcpath / "c1" / "config").read_text()
    lxc.calls.clear()
    status = await service.put("c1", spec(memory="128Mi", nofile=512))
    assert lxc.calls == []
    assert cgroup(tmp_path, "c1", "memory.max") == str(128 * 2**20)  # written live
    assert (lxc.lxcpath / "c1" / "config").read_text() == config  # a running one: not yet
    assert status.limits is not None and (status.limits.memory, status.limits.nofile) == (
        128 * 2**20,
        512,  # lowered on the running init with prlimit
    )
    lxc.calls.clear()
    await service.put("c1", spec(memory="128Mi", nofile=512, state="stopped"))
    assert lxc.calls == [("stop", "c1"), ("info", "c1")]
    await service.put("c1", spec(memory="128Mi", nofile=512))
    assert "lxc.cgroup2.memory.max = 134217728" in (lxc.lxcpath / "c1" / "config").read_text()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"template": "debian"}, "cannot change in place"),
        ({"network": {"mode": "bridge", "bridge": "br0"}}, "network cannot change"),
    ],
)
async def test_what_cannot_change_in_place_is_a_conflict(
    service: ContainerService, change: dict[str, Any], message: str
) -> None:
    await service.put("c1", spec())
    changed = ContainerSpec.model_validate({**spec().model_dump(by_alias=True), **change})
    with pytest.raises(SpecConflict, match=message):
        await service.put("c1", changed)


async def test_a_directory_that_is_no_container_is_left_alone(
    service: ContainerService, lxc: FakeLxc
) -> None:
    (lxc.lxcpath / "c1").mkdir()
    with pytest.raises(SpecConflict, match="not a container of tuxio-agent"):
        await service.put("c1", spec())
    assert lxc.calls == []


async def test_a_container_lxc_lost_is_made_again(service: ContainerService, lxc: FakeLxc) -> None:
    await service.put("c1", spec())
    await lxc.kill("c1")
    (lxc.lxcpath / "c1" / "config").unlink()  # LXC no longer knows it; the record survived
    lxc.calls.clear()
    status = await service.put("c1", spec())
    assert lxc.calls == [("info", "c1"), ("start", "c1")]
    assert status.state == "running"


async def test_limits_not_in_force_are_an_error(service: ContainerService, lxc: FakeLxc) -> None:
    lxc.cgroup_override = {"pids.max": "32"}  # the "kernel" keeps another value
    with pytest.raises(LimitsNotInForce, match="pids 32 instead of 64"):
        await service.put("c1", spec())


async def test_a_failed_start_says_what_lxc_said(service: ContainerService, lxc: FakeLxc) -> None:
    lxc.fail_start = True
    (lxc.lxcpath / "c1").mkdir()
    (lxc.lxcpath / "c1" / "lxc.log").write_text("ERROR start - no such file\n")
    with pytest.raises(SpecConflict):
        await service.put("c1", spec())  # the directory is there: not a container of ours
    shutil.rmtree(lxc.lxcpath / "c1")
    with pytest.raises(LxcCommandFailed, match="lxc-start c1 failed"):
        await service.put("c1", spec())
    assert service.records["c1"].name == "c1"  # the clone stays: the next PUT starts it


async def test_a_container_being_destroyed_is_gone_for_get_and_lists(
    service: ContainerService, lxc: FakeLxc
) -> None:
    """Between the stop and the removal a container being destroyed looked stopped, and an
    operator took the container deleted under it for one that died (found by make
    test-slow: a restartPolicy Never Sandbox Failed with ContainerDied, not ContainerVanished)."""
    await service.put("c1", spec())
    lxc.hold_destroy = asyncio.Event()
    deleting = asyncio.create_task(service.delete("c1"))
    await asyncio.wait_for(lxc.destroy_stopped.wait(), 10)
    with pytest.raises(ContainerNotFound):
        await service.get("c1")
    assert await service.find({}) == []
    lxc.hold_destroy.set()
    assert await deleting is True
    with pytest.raises(ContainerNotFound):
        await service.get("c1")

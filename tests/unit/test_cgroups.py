"""cgroup v1 and v2 rendering, live plans, and reading back, on any machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuxio.nodeagent.cgroups import (
    CgroupFiles,
    CgroupLimits,
    CgroupReading,
    CgroupV1,
    CgroupV2,
    ControllerMissing,
    _mounts,
    detect_driver,
    payload_path,
)

LIMITS = CgroupLimits(
    cpuset="2-3", cpu_quota=0.5, memory=256 * 2**20, memory_swap=512 * 2**20, pids=128
)


def test_v1_render() -> None:
    driver = CgroupV1(Path("/sys/fs/cgroup"), swap_accounting=True)
    assert driver.render(LIMITS) == [
        ("cpuset.cpus", "2-3"),
        ("cpu.cfs_period_us", "100000"),
        ("cpu.cfs_quota_us", "50000"),
        ("memory.limit_in_bytes", "268435456"),
        ("memory.memsw.limit_in_bytes", "536870912"),
        ("pids.max", "128"),
    ]
    assert driver.config_lines(LIMITS)[0] == "lxc.cgroup.cpuset.cpus = 2-3"


def test_v2_render() -> None:
    driver = CgroupV2(Path("/sys/fs/cgroup"), swap_accounting=True)
    assert driver.render(LIMITS) == [
        ("cpuset.cpus", "2-3"),
        ("cpu.max", "50000 100000"),
        ("memory.max", "268435456"),
        ("memory.swap.max", "268435456"),  # v2 limits swap alone: 512Mi - 256Mi
        ("pids.max", "128"),
    ]
    assert driver.config_lines(LIMITS)[-1] == "lxc.cgroup2.pids.max = 128"


@pytest.mark.parametrize("driver_type", [CgroupV1, CgroupV2])
def test_uncapped_cpu_and_no_swap_accounting(driver_type: type[CgroupV1] | type[CgroupV2]) -> None:
    driver = driver_type(Path("/x"), swap_accounting=False)
    settings = dict(driver.render(CgroupLimits("1", None, 64 * 2**20, None, 64)))
    assert "memory.memsw.limit_in_bytes" not in settings
    assert "memory.swap.max" not in settings
    if driver_type is CgroupV1:
        assert settings["cpu.cfs_quota_us"] == "-1"
    else:
        assert settings["cpu.max"] == "max 100000"


def _reading(**overrides: object) -> CgroupReading:
    base: dict[str, object] = dict(
        cpuset="2-3",
        cpu_quota=0.5,
        memory=256 * 2**20,
        memory_swap=512 * 2**20,
        pids=128,
        cpu_seconds=1.0,
        memory_bytes=10,
        memory_peak_bytes=20,
        pids_current=3,
    )
    base.update(overrides)
    return CgroupReading(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("driver_type", [CgroupV1, CgroupV2])
def test_live_plan_is_empty_when_nothing_changed(
    driver_type: type[CgroupV1] | type[CgroupV2],
) -> None:
    driver = driver_type(Path("/x"), swap_accounting=True)
    assert driver.live_plan(_reading(), LIMITS) == []


def test_v1_growing_memory_writes_memsw_first() -> None:
    driver = CgroupV1(Path("/x"), swap_accounting=True)
    bigger = CgroupLimits("2-3", 0.5, memory=1024 * 2**20, memory_swap=2048 * 2**20, pids=128)
    assert [k for k, _ in driver.live_plan(_reading(), bigger)] == [
        "memory.memsw.limit_in_bytes",
        "memory.limit_in_bytes",
    ]


def test_v1_shrinking_memory_writes_memory_first() -> None:
    driver = CgroupV1(Path("/x"), swap_accounting=True)
    smaller = CgroupLimits("2-3", 0.5, memory=64 * 2**20, memory_swap=64 * 2**20, pids=128)
    assert [k for k, _ in driver.live_plan(_reading(), smaller)] == [
        "memory.limit_in_bytes",
        "memory.memsw.limit_in_bytes",
    ]


def test_v2_plan_only_touches_what_changed() -> None:
    driver = CgroupV2(Path("/x"), swap_accounting=True)
    changed = CgroupLimits("3", None, 256 * 2**20, 512 * 2**20, pids=64)
    assert driver.live_plan(_reading(), changed) == [
        ("cpuset.cpus", "3"),
        ("cpu.max", "max 100000"),
        ("pids.max", "64"),
    ]


def _tree(root: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")


def test_v2_read_and_apply_on_a_tree(tmp_path: Path) -> None:
    _tree(
        tmp_path,
        {
            "cpuset.cpus": "2-3",
            "cpu.max": "50000 100000",
            "memory.max": "268435456",
            "memory.swap.max": "268435456",
            "pids.max": "128",
            "cpu.stat": "usage_usec 2500000\nuser_usec 1",
            "memory.current": "1048576",
            "memory.peak": "2097152",
            "pids.current": "4",
        },
    )
    driver = CgroupV2(tmp_path, swap_accounting=True)
    files = CgroupFiles({"": tmp_path})
    reading = driver.read(files)
    assert reading == CgroupReading(
        cpuset="2-3",
        cpu_quota=0.5,
        memory=268435456,
        memory_swap=536870912,
        pids=128,
        cpu_seconds=2.5,
        memory_bytes=1048576,
        memory_peak_bytes=2097152,
        pids_current=4,
    )
    written = driver.apply(files, CgroupLimits("2-3", 1.5, 268435456, 536870912, 256))
    assert written == [("cpu.max", "150000 100000"), ("pids.max", "256")]
    assert (tmp_path / "cpu.max").read_text() == "150000 100000"
    assert driver.read(files).pids == 256


def test_v2_unlimited_values(tmp_path: Path) -> None:
    _tree(
        tmp_path,
        {
            "cpuset.cpus": "0",
            "cpu.max": "max 100000",
            "memory.max": "max",
            "memory.swap.max": "max",
            "pids.max": "max",
            "cpu.stat": "usage_usec 0",
            "memory.current": "0",
            "pids.current": "0",
        },
    )
    reading = CgroupV2(tmp_path, swap_accounting=True).read(CgroupFiles({"": tmp_path}))
    assert (reading.cpu_quota, reading.memory, reading.memory_swap, reading.pids) == (None,) * 4
    assert reading.memory_peak_bytes is None  # kernels before 5.19 have no memory.peak


def test_v1_read_on_a_tree(tmp_path: Path) -> None:
    dirs = {
        c: tmp_path / c / "lxc.payload.x" for c in ("cpuset", "cpu", "cpuacct", "memory", "pids")
    }
    _tree(
        tmp_path,
        {
            "cpuset/lxc.payload.x/cpuset.cpus": "1",
            "cpu/lxc.payload.x/cpu.cfs_quota_us": "-1",
            "cpu/lxc.payload.x/cpu.cfs_period_us": "100000",
            "cpuacct/lxc.payload.x/cpuacct.usage": "1500000000",
            "memory/lxc.payload.x/memory.limit_in_bytes": "9223372036854771712",
            "memory/lxc.payload.x/memory.memsw.limit_in_bytes": "134217728",
            "memory/lxc.payload.x/memory.usage_in_bytes": "4096",
            "memory/lxc.payload.x/memory.max_usage_in_bytes": "8192",
            "pids/lxc.payload.x/pids.max": "max",
            "pids/lxc.payload.x/pids.current": "2",
        },
    )
    reading = CgroupV1(tmp_path, swap_accounting=True).read(CgroupFiles(dirs))
    assert reading == CgroupReading(
        cpuset="1",
        cpu_quota=None,
        memory=None,
        memory_swap=134217728,
        pids=None,
        cpu_seconds=1.5,
        memory_bytes=4096,
        memory_peak_bytes=8192,
        pids_current=2,
    )


def test_missing_controller_is_a_sentinel(tmp_path: Path) -> None:
    files = CgroupFiles({"memory": tmp_path})
    with pytest.raises(ControllerMissing):
        files.get("pids.max")
    with pytest.raises(ControllerMissing):
        files.get("memory.limit_in_bytes")
    assert files.get_optional("memory.limit_in_bytes") is None


MOUNTINFO = """\
25 24 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
27 25 0:24 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,xattr,name=systemd
28 25 0:25 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
29 25 0:26 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
"""


def test_mountinfo_parsing() -> None:
    v1, v2 = _mounts(MOUNTINFO)
    assert v2 == Path("/sys/fs/cgroup/unified")
    assert v1 == {
        "cpu": Path("/sys/fs/cgroup/cpu,cpuacct"),
        "cpuacct": Path("/sys/fs/cgroup/cpu,cpuacct"),
        "memory": Path("/sys/fs/cgroup/memory"),
    }


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/lxc.payload.web", "lxc.payload.web"),
        ("/lxc.payload.web/init.scope", "lxc.payload.web"),
        ("/machine/lxc.payload.web/system.slice/x", "machine/lxc.payload.web"),
        ("/elsewhere", "elsewhere"),
    ],
)
def test_payload_path(path: str, expected: str) -> None:
    assert payload_path(path, "web") == expected


def test_detect(tmp_path: Path) -> None:
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "memory.memsw.limit_in_bytes").write_text("0")
    v1 = detect_driver(tmp_path)
    assert (v1.version, v1.swap_accounting) == (1, True)
    unified = tmp_path / "unified-host"
    (unified / "system.slice").mkdir(parents=True)
    (unified / "cgroup.controllers").write_text("cpuset cpu memory pids\n")
    (unified / "system.slice" / "memory.max").write_text("max")
    v2 = detect_driver(unified)
    assert (v2.version, v2.swap_accounting) == (2, False)
    (unified / "system.slice" / "memory.swap.max").write_text("max")
    assert detect_driver(unified).swap_accounting is True

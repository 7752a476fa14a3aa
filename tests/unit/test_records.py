"""The LXC config rendered from a spec, and the record kept beside it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from tuxio.nodeagent.models import ContainerSpec
from tuxio.nodeagent.records import (
    ContainerRecord,
    read_record,
    render_config,
    spec_hash,
    write_record,
)
from tuxio.nodeagent.templates import Template

TEMPLATE = Template(
    "busybox", Path("/t/busybox/versions/1/rootfs"), datetime.now(UTC), 1, ["/sbin/init"], "SIGUSR1"
)


def _config(spec: ContainerSpec, apparmor: bool = False) -> list[str]:
    return render_config(
        name="web",
        container_dir=Path("/c/web"),
        template=TEMPLATE,
        spec=spec,
        cgroup_lines=["lxc.cgroup.pids.max = 64"],
        idmap_base=100000,
        idmap_size=65536,
        apparmor=apparmor,
    ).splitlines()


def test_config_is_unprivileged_isolated_and_limited() -> None:
    lines = _config(
        ContainerSpec.model_validate({"template": "busybox", "limits": {"nofile": 4096}})
    )
    assert "lxc.idmap = u 0 100000 65536" in lines
    assert "lxc.idmap = g 0 100000 65536" in lines
    assert "lxc.rootfs.path = overlay:/t/busybox/versions/1/rootfs:/c/web/overlay/delta" in lines
    assert "lxc.net.0.type = empty" in lines
    assert "lxc.cap.drop = mac_admin mac_override sys_time sys_module sys_rawio" in lines
    assert "lxc.seccomp.profile = /usr/share/lxc/config/common.seccomp" in lines
    assert "lxc.prlimit.nofile = 4096" in lines
    assert "lxc.cgroup.pids.max = 64" in lines
    assert "lxc.init.cmd = /sbin/init" in lines
    assert not any(line.startswith("lxc.include") for line in lines)
    assert not any("apparmor" in line for line in lines)


def test_apparmor_where_the_host_has_it() -> None:
    lines = _config(ContainerSpec(template="busybox"), apparmor=True)
    assert "lxc.apparmor.profile = generated" in lines


def test_bridge_network_when_asked() -> None:
    spec = ContainerSpec.model_validate(
        {"template": "busybox", "network": {"mode": "bridge", "bridge": "br0"}}
    )
    lines = _config(spec)
    assert "lxc.net.0.type = veth" in lines
    assert "lxc.net.0.link = br0" in lines


def test_spec_hash_is_stable_and_sensitive() -> None:
    a = ContainerSpec.model_validate({"template": "busybox", "labels": {"x": "1", "y": "2"}})
    b = ContainerSpec.model_validate({"labels": {"y": "2", "x": "1"}, "template": "busybox"})
    c = ContainerSpec.model_validate({"template": "busybox", "labels": {"x": "1", "y": "3"}})
    assert spec_hash(a) == spec_hash(b) != spec_hash(c)
    assert spec_hash(
        ContainerSpec.model_validate({"template": "busybox", "limits": {"memory": "256Mi"}})
    ) == spec_hash(
        ContainerSpec.model_validate({"template": "busybox", "limits": {"memory": 268435456}})
    )


def test_record_round_trip(tmp_path: Path) -> None:
    spec = ContainerSpec.model_validate({"template": "busybox", "labels": {"tux.io/uid": "u1"}})
    record = ContainerRecord(
        "web", "busybox", TEMPLATE.rootfs, spec, spec_hash(spec), "2-3", datetime.now(UTC)
    )
    write_record(tmp_path, record)
    assert read_record(tmp_path) == record
    assert read_record(tmp_path / "missing") is None
    assert oct((tmp_path / "tuxio.json").stat().st_mode & 0o777) == "0o640"

"""What the agent keeps with each container, inside the container's own LXC directory.

Two files sit beside each other in `<lxcpath>/<name>/`: LXC's `config`, rendered here whole from
the spec, and `tuxio.json` with what LXC's config has no key for (labels, the spec and its hash,
the assigned cpuset). lxc-destroy removes both with the container, and a restarted agent reads
them back: there is no other database.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .models import ContainerSpec, NetworkSpec
from .templates import Template

__all__ = [
    "RECORD_FILE",
    "ContainerRecord",
    "RecordCorrupt",
    "read_record",
    "render_config",
    "spec_hash",
    "write_atomically",
    "write_record",
]

RECORD_FILE = "tuxio.json"
LXC_SHARE = Path("/usr/share/lxc/config")


@dataclass(frozen=True)
class ContainerRecord:
    """The agent's memory of one container."""

    name: str
    template: str
    template_rootfs: Path
    spec: ContainerSpec
    spec_hash: str
    cpuset: str  # the cores assigned to it (after any burst)
    created_at: datetime
    # How its writable layer is limited: the backend and the limits it was made with (None
    # for a container made before the agent limited disks).
    disk_backend: str = "none"
    disk_bytes: int | None = None
    disk_inodes: int | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "name": self.name,
                "template": self.template,
                "templateRootfs": str(self.template_rootfs),
                "spec": self.spec.model_dump(mode="json", by_alias=True),
                "specHash": self.spec_hash,
                "cpuset": self.cpuset,
                "createdAt": self.created_at.isoformat(),
                "disk": {
                    "backend": self.disk_backend,
                    "bytes": self.disk_bytes,
                    "inodes": self.disk_inodes,
                },
            },
            indent=1,
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> ContainerRecord:
        data = json.loads(text)
        disk = data.get("disk") or {}
        return cls(
            name=data["name"],
            template=data["template"],
            template_rootfs=Path(data["templateRootfs"]),
            spec=ContainerSpec.model_validate(data["spec"]),
            spec_hash=data["specHash"],
            cpuset=data["cpuset"],
            created_at=datetime.fromisoformat(data["createdAt"]),
            disk_backend=disk.get("backend", "none"),
            disk_bytes=disk.get("bytes"),
            disk_inodes=disk.get("inodes"),
        )


def spec_hash(spec: ContainerSpec) -> str:
    """A stable hash of a spec's canonical JSON form."""
    canonical = json.dumps(spec.model_dump(mode="json", by_alias=True), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class RecordCorrupt(ValueError):
    """A record that cannot be read back (truncated, garbled, or of no known shape)."""


def write_atomically(path: Path, text: str, mode: int = 0o640) -> None:
    """Write a file so that readers see the old or the new content, never a part, also after
    a power loss: the content is synced before the rename, and the directory after it."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        data = text.encode()
        while data:
            data = data[os.write(fd, data) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def write_record(container_dir: Path, record: ContainerRecord) -> None:
    write_atomically(container_dir / RECORD_FILE, record.to_json() + "\n")


def read_record(container_dir: Path) -> ContainerRecord | None:
    """The record, None if there is none; RecordCorrupt if it cannot be read back."""
    path = container_dir / RECORD_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordCorrupt(f"{path}: unreadable: {exc}") from None
    try:
        return ContainerRecord.from_json(text)
    except (ValueError, KeyError, TypeError) as exc:  # pydantic's errors are ValueErrors
        summary = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RecordCorrupt(f"{path}: {type(exc).__name__}: {summary}") from None


def _network_lines(network: NetworkSpec) -> list[str]:
    if network.mode == "none":
        # Only the loopback interface of a fresh network namespace.
        return ["lxc.net.0.type = empty"]
    return [
        "lxc.net.0.type = veth",
        f"lxc.net.0.link = {network.bridge}",
        "lxc.net.0.name = eth0",
        "lxc.net.0.flags = up",
    ]


def render_config(
    *,
    name: str,
    container_dir: Path,
    template: Template,
    spec: ContainerSpec,
    cgroup_lines: list[str],
    idmap_base: int,
    idmap_size: int,
    apparmor: bool,
) -> str:
    """The whole LXC config of a container."""
    limits = spec.limits
    lines = [
        "# Written by tuxio-agent from the container's spec; rewritten on every change.",
        # LXC's common.conf hardening, spelled out rather than included: the include also
        # pulls in common.conf.d/, where lxcfs' hooks add ~20 ms to every start and 500 ms
        # (a fixed sleep) to every stop.
        "lxc.cap.drop = mac_admin mac_override sys_time sys_module sys_rawio",
        f"lxc.seccomp.profile = {LXC_SHARE / 'common.seccomp'}",
        # /sys read-only whole (sys:mixed leaves /sys/devices/virtual/net writable): nothing
        # a sandbox needs, and where the host's own /sys is read-only (a kind node, a pod),
        # the kernel refuses a writable sysfs in a user namespace.
        "lxc.mount.auto = cgroup:mixed proc:mixed sys:ro",
        "lxc.arch = linux64",
        f"lxc.uts.name = {name}",
        f"lxc.rootfs.path = overlay:{template.rootfs}:{container_dir / 'overlay' / 'delta'}",
        # Unprivileged: container root is host id `idmap_base`, not host root.
        f"lxc.idmap = u 0 {idmap_base} {idmap_size}",
        f"lxc.idmap = g 0 {idmap_base} {idmap_size}",
        f"lxc.init.cmd = {' '.join(template.init)}",
        f"lxc.signal.halt = {template.halt_signal}",
        "lxc.autodev = 1",
        # Sandboxes are reached through exec, not consoles: no ttys to allocate at start.
        "lxc.tty.max = 0",
        "lxc.pty.max = 64",
        "lxc.console.path = none",
        f"lxc.log.file = {container_dir / 'lxc.log'}",
        "lxc.log.level = WARN",
    ]
    if apparmor:
        lines += ["lxc.apparmor.profile = generated", "lxc.apparmor.allow_nesting = 0"]
    lines += _network_lines(spec.network)
    lines += [
        f"lxc.prlimit.nofile = {limits.nofile}",
        f"lxc.prlimit.nproc = {limits.nproc}",
    ]
    lines += cgroup_lines
    return "\n".join(lines) + "\n"

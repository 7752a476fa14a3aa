"""Templates: read-only base root filesystems that containers are overlay clones of.

No ZFS: a template is a plain directory owned by the unprivileged id range, used only as an
overlay lower layer. Each build lands in a new version directory and `current` points at the
newest, so rebuilding (to update the OS) never touches the lower layer of a running container;
versions no container uses any more are pruned.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .errors import TemplateBuildFailed, UnknownTemplate

__all__ = [
    "BUILDERS",
    "Template",
    "TemplateStore",
    "build_busybox",
    "build_debian",
    "shift_ownership",
]

log = logging.getLogger(__name__)

_META = "template.json"


@dataclass(frozen=True)
class Template:
    """One built template version."""

    name: str
    rootfs: Path
    built_at: datetime
    size_bytes: int
    init: list[str]
    halt_signal: str


class TemplateStore:
    """The templates of one host, under `root/<name>/{current, versions/<stamp>}`."""

    def __init__(self, root: Path, idmap_base: int, idmap_size: int) -> None:
        self.root = root
        self.idmap_base = idmap_base
        self.idmap_size = idmap_size
        # A version never changes once built (a rebuild is a new version, pruning removes only
        # versions no container uses and that are not current): its metadata is read once.
        self._versions: dict[tuple[str, Path], Template] = {}

    def get(self, name: str) -> Template:
        """The current version of template `name`."""
        link = self.root / name / "current"
        try:
            target = os.readlink(link)
        except OSError:
            target = ""
        if target.startswith("versions/") and ".." not in target:
            # As build() links it: one readlink instead of resolving every path component
            # (the root is resolved already: AgentSettings.data_dir).
            return self.version_at(name, self.root / name / target / "rootfs")
        return self.version_at(name, (link / "rootfs").resolve())

    def version_at(self, name: str, rootfs: Path) -> Template:
        """The version of template `name` whose root filesystem is `rootfs`."""
        known = self._versions.get((name, rootfs))
        if known is not None:
            return known
        try:
            meta = json.loads((rootfs.parent / _META).read_text())
        except (OSError, ValueError):
            raise UnknownTemplate(
                f"template {name!r} is not on this host; build it with "
                f"'tuxio-agent template build {name}'"
            ) from None
        template = Template(
            name=name,
            rootfs=rootfs,
            built_at=datetime.fromisoformat(meta["builtAt"]),
            size_bytes=int(meta["sizeBytes"]),
            init=list(meta["init"]),
            halt_signal=str(meta["haltSignal"]),
        )
        self._versions[(name, rootfs)] = template
        return template

    def all(self) -> list[Template]:
        found: list[Template] = []
        if self.root.is_dir():
            for entry in sorted(self.root.iterdir()):
                try:
                    found.append(self.get(entry.name))
                except UnknownTemplate:
                    continue
        return found

    def build(self, name: str, **options: str) -> Template:
        """Build template `name` into a new version and make it current."""
        try:
            builder = BUILDERS[name]
        except KeyError:
            raise UnknownTemplate(
                f"no builder for template {name!r}; known: {', '.join(sorted(BUILDERS))}"
            ) from None
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        version = self.root / name / "versions" / stamp
        rootfs = version / "rootfs"
        rootfs.mkdir(parents=True)
        log.info("template build started: %s into %s", name, version)
        try:
            init, halt = builder(rootfs, **options)
            shift_ownership(rootfs, self.idmap_base, self.idmap_size)
            size = _tree_size(rootfs)
            meta = {
                "name": name,
                "builtAt": datetime.now(UTC).isoformat(),
                "sizeBytes": size,
                "init": init,
                "haltSignal": halt,
                "idmapBase": self.idmap_base,
            }
            (version / _META).write_text(json.dumps(meta, indent=2) + "\n")
            # The base is never written once built: only overlay upper layers change.
            os.chmod(version, 0o755)  # noqa: S103 - world-readable like any OS image
        except BaseException:
            shutil.rmtree(version, ignore_errors=True)
            raise
        link = self.root / name / "current"
        tmp_link = self.root / name / ".current.tmp"
        tmp_link.unlink(missing_ok=True)
        tmp_link.symlink_to(Path("versions") / stamp)
        tmp_link.replace(link)  # atomic: readers see the old or the new version, never neither
        log.info("template build finished: %s (%d bytes)", name, size)
        return self.get(name)

    def prune(self, in_use: set[Path]) -> list[Path]:
        """Remove versions that are neither current nor a lower layer of any container."""
        removed: list[Path] = []
        if not self.root.is_dir():
            return removed
        for template_dir in self.root.iterdir():
            versions = template_dir / "versions"
            if not versions.is_dir():
                continue
            current = (template_dir / "current").resolve()
            for version in versions.iterdir():
                resolved = version.resolve()
                if resolved == current or (resolved / "rootfs") in in_use:
                    continue
                shutil.rmtree(version, ignore_errors=True)
                removed.append(version)
        return removed


def shift_ownership(root: Path, base: int, size: int) -> None:
    """Move every file's owner from host ids 0..size-1 to base..base+size-1.

    chown clears set-id bits, so they are put back afterwards.
    """

    def shift(path: str) -> None:
        info = os.lstat(path)
        uid, gid = info.st_uid, info.st_gid
        if uid >= size or gid >= size:
            if base <= uid < base + size and base <= gid < base + size:
                return  # already shifted
            raise TemplateBuildFailed(f"{path} is owned by {uid}:{gid}, outside 0..{size - 1}")
        os.lchown(path, base + uid, base + gid)
        if not stat.S_ISLNK(info.st_mode) and info.st_mode & (stat.S_ISUID | stat.S_ISGID):
            os.chmod(path, stat.S_IMODE(info.st_mode))

    shift(str(root))
    for directory, dirs, files in os.walk(root):
        for entry in dirs + files:
            shift(os.path.join(directory, entry))


def _tree_size(root: Path) -> int:
    total = 0
    for directory, _, files in os.walk(root):
        for entry in files:
            total += os.lstat(os.path.join(directory, entry)).st_size
    return total


def _is_static_elf(path: Path) -> bool:
    """True for an ELF executable with no program interpreter (statically linked)."""
    with path.open("rb") as fh:
        header = fh.read(64)
        if header[:4] != b"\x7fELF" or header[4] != 2:  # 64-bit ELF only
            return False
        (phoff,) = struct.unpack_from("<Q", header, 32)
        phentsize, phnum = struct.unpack_from("<HH", header, 54)
        for i in range(phnum):
            fh.seek(phoff + i * phentsize)
            (p_type,) = struct.unpack("<I", fh.read(4))
            if p_type == 3:  # PT_INTERP
                return False
    return True


_BUSYBOX_FILES = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
    "etc/shadow": "root:*:19000:0:99999:7:::\n",
    # No respawn entries: init only waits, reaps orphans and halts on SIGUSR1.
    "etc/inittab": "::sysinit:/bin/mount -t tmpfs -o nosuid,nodev tmpfs /tmp\n"
    "::shutdown:/bin/umount -a -r\n",
    "etc/profile": "export PS1='\\u@\\h:\\w\\$ '\n",
    "etc/hosts": "127.0.0.1 localhost\n::1 localhost\n",
    "etc/resolv.conf": "",
    "etc/os-release": 'NAME="tuxio busybox"\nID=busybox\nPRETTY_NAME="tuxio busybox sandbox"\n',
}


def build_busybox(rootfs: Path, busybox: str = "/bin/busybox") -> tuple[list[str], str]:
    """A busybox root filesystem from the host's static busybox: a second or so."""
    source = Path(busybox)
    if not source.is_file() or not _is_static_elf(source):
        raise TemplateBuildFailed(
            f"{busybox} is missing or not statically linked (install Debian's busybox-static)"
        )
    for directory in (
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "etc",
        "proc",
        "sys",
        "dev",
        "run",
        "var/log",
        "root",
        "home",
        "mnt",
    ):
        (rootfs / directory).mkdir(parents=True, exist_ok=True)
    (rootfs / "tmp").mkdir(mode=0o1777)
    os.chmod(rootfs / "tmp", 0o1777)  # noqa: S103 - /tmp is sticky and world-writable
    os.chmod(rootfs / "root", 0o700)
    shutil.copy2(source, rootfs / "bin" / "busybox")
    listing = subprocess.run(
        [str(source), "--list-full"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in listing:
        target = rootfs / applet
        if not target.exists() and not target.is_symlink():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to("/bin/busybox")
    for relative, text in _BUSYBOX_FILES.items():
        (rootfs / relative).write_text(text)
    os.chmod(rootfs / "etc" / "shadow", 0o600)
    return ["/sbin/init"], "SIGUSR1"


def build_debian(
    rootfs: Path,
    suite: str = "bookworm",
    mirror: str = "http://deb.debian.org/debian",
    cache_dir: str = "/var/cache/tuxio/debootstrap",
) -> tuple[list[str], str]:
    """debootstrap minbase from Debian's archive, with tini as init: under a minute.

    Downloaded packages are kept in `cache_dir`, so a rebuild fetches only what changed.
    """
    if shutil.which("debootstrap") is None:
        raise TemplateBuildFailed("debootstrap is not installed (apt-get install debootstrap)")
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    command = [
        "debootstrap",
        "--variant=minbase",
        "--include=tini,ca-certificates,procps",
        f"--cache-dir={Path(cache_dir).resolve()}",
        suite,
        str(rootfs),
        mirror,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
        raise TemplateBuildFailed(f"debootstrap failed ({result.returncode}):\n{tail}")
    # Nothing to fetch at run time and nothing cached: keep the base small.
    shutil.rmtree(rootfs / "var" / "cache" / "apt" / "archives", ignore_errors=True)
    (rootfs / "var" / "cache" / "apt" / "archives" / "partial").mkdir(parents=True)
    (rootfs / "etc" / "hostname").write_text("sandbox\n")
    (rootfs / "etc" / "resolv.conf").write_text("")
    # tini reaps orphans as PID 1 and forwards the halt signal to its child.
    return ["/usr/bin/tini", "--", "/bin/sleep", "infinity"], "SIGTERM"


BUILDERS: dict[str, Callable[..., tuple[list[str], str]]] = {
    "busybox": build_busybox,
    "debian": build_debian,
}

"""Disk quotas as a per-container ext4 image: a sparse file, loop-mounted as the writable layer.

An ext4 filesystem cannot hold more than its size nor more files than its inode table: the
limit is the filesystem itself, whatever the writer's credentials (overlayfs writes with the
mounter's, and a project quota on ext4 yields to CAP_SYS_RESOURCE), and it needs no quota
support in the kernel. The host pays only for the blocks written: the file is sparse, and
`discard` punches the holes back when the container deletes files.

mkfs runs once per (size, inodes, owner): that pristine image is kept under
`<data_dir>/disk/pristine/`, and every container gets a sparse copy of it (its few hundred
KiB of metadata), attached and mounted through the system calls (see blockdev). The inode
table has a granularity (16 inodes per block, per block group): the spare inodes a pristine
image has beyond the limit are taken by empty files outside the container's layer, so a
container can create exactly as many files as its limit (less the layer's own directories).
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
import subprocess
import tempfile
import threading
from pathlib import Path

from ..errors import DiskSetupFailed, HostPrerequisiteMissing
from .base import WRITABLE_LAYER, DiskQuota, DiskUsage
from .blockdev import MNT_DETACH, attach_loop, mount, sparse_copy, umount

__all__ = ["IMAGE_FILE", "Ext4ImageBackend"]

log = logging.getLogger(__name__)

IMAGE_FILE = "disk.img"
_BLOCK = 4096
_RESERVED_DIR = "reserved-inodes"
# noinit_itable: the kernel's lazy inode-table zeroing would write every table of every
# image (16 MiB for 65536 inodes) into its sparse file; the tables mkfs left uninitialised
# are marked so in the group descriptors, which is all the kernel needs.
_MOUNT_OPTIONS = "noinit_itable,discard"


class Ext4ImageBackend:
    """One ext4 image per container, under the container's own directory."""

    name = "ext4-image"

    def __init__(self, state_dir: Path, mkfs: str = "mkfs.ext4") -> None:
        self.pristine_dir = state_dir / "pristine"
        self.mkfs = shutil.which(mkfs) or mkfs
        self._lock = threading.Lock()

    def check_host(self) -> None:
        if shutil.which(self.mkfs) is None:
            raise HostPrerequisiteMissing("mkfs.ext4 is missing (apt-get install e2fsprogs)")
        if not Path("/dev/loop-control").exists():
            raise HostPrerequisiteMissing("no /dev/loop-control: the kernel has no loop devices")

    # ----- the interface ------------------------------------------------------------------

    def prepare(self, container_dir: Path, quota: DiskQuota, owner: int) -> None:
        pristine = self.pristine(quota, owner)
        image = container_dir / IMAGE_FILE
        layer = container_dir / WRITABLE_LAYER
        try:
            sparse_copy(pristine, image)
            layer.mkdir(mode=0o755, exist_ok=True)
            self._mount(image, layer)
        except OSError as exc:
            if _mounted(layer):
                umount(layer, MNT_DETACH)
            image.unlink(missing_ok=True)
            raise DiskSetupFailed(
                f"cannot set up the disk image of {container_dir.name}: {exc}"
            ) from exc

    def restore(self, container_dir: Path, quota: DiskQuota) -> None:
        layer = container_dir / WRITABLE_LAYER
        if _mounted(layer):
            return
        try:
            self._mount(container_dir / IMAGE_FILE, layer)
        except OSError as exc:
            raise DiskSetupFailed(
                f"cannot mount the disk image of {container_dir.name}: {exc}"
            ) from exc
        log.info("disk image of %s mounted again", container_dir.name)

    def usage(self, container_dir: Path, quota: DiskQuota) -> DiskUsage | None:
        layer = container_dir / WRITABLE_LAYER
        try:
            if not _mounted(layer):  # being destroyed, or not restored: no image to count
                return None
            info = os.statvfs(layer)
        except OSError:
            return None
        # The spare inodes are counted in neither: used are the layer's own dozen (root,
        # lost+found, delta, work, ...) and the container's files.
        return DiskUsage(
            used_bytes=(info.f_blocks - info.f_bfree) * info.f_frsize,
            limit_bytes=info.f_blocks * info.f_frsize,
            used_inodes=quota.inodes - info.f_ffree,
            limit_inodes=quota.inodes,
        )

    def release(self, container_dir: Path) -> None:
        # Detached lazily: a running container's mount namespace keeps its copy until the
        # container stops (lxc-destroy stops it next); the loop device goes with the last one.
        layer = container_dir / WRITABLE_LAYER
        while _mounted(layer) and umount(layer, MNT_DETACH):
            pass  # a layer mounted twice (by hand, say) is detached twice

    # ----- pristine images ---------------------------------------------------------------

    def pristine(self, quota: DiskQuota, owner: int) -> Path:
        """The formatted image for this quota, made once (under a lock: creates run in
        threads) and kept."""
        path = self.pristine_dir / f"{quota.bytes}-{quota.inodes}-{owner}.img"
        if path.exists():
            return path
        with self._lock:
            if not path.exists():
                self._make_pristine(path, quota, owner)
        return path

    def _make_pristine(self, path: Path, quota: DiskQuota, owner: int) -> None:
        self.pristine_dir.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        partial.unlink(missing_ok=True)
        with tempfile.TemporaryDirectory(dir=self.pristine_dir) as staging:
            delta = Path(staging) / "delta"
            delta.mkdir(mode=0o755)
            os.chown(delta, owner, owner)
            with partial.open("wb") as fh:
                fh.truncate(quota.bytes)
            argv = [
                self.mkfs,
                "-q",
                "-F",
                "-t",
                "ext4",
                "-b",
                str(_BLOCK),
                "-I",
                "256",
                "-N",
                str(quota.inodes),
                "-m",
                "0",
                # No journal: a sandbox's layer is disposable, and a journal would cost each
                # image 32 MiB of its quota and a kernel thread.
                "-O",
                "^has_journal,^resize_inode",
                "-E",
                f"root_owner={owner}:{owner},lazy_itable_init=1,nodiscard",
                "-L",
                "tuxio",
                "-d",
                staging,
                str(partial),
            ]
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                partial.unlink(missing_ok=True)
                raise DiskSetupFailed(f"mkfs.ext4 failed: {done.stderr.strip()}")
        self._reserve_spare_inodes(partial, quota.inodes)
        os.replace(partial, path)
        log.info("pristine disk image made: %s", path.name)

    def _reserve_spare_inodes(self, image: Path, limit: int) -> None:
        """Take the inodes the image has beyond `limit` with empty files outside delta/."""
        total, _ = _superblock_inodes(image)
        spare = total - limit
        if spare <= 0:
            return
        with tempfile.TemporaryDirectory(dir=self.pristine_dir) as point:
            self._mount(image, Path(point))
            try:
                reserved = Path(point) / _RESERVED_DIR
                reserved.mkdir(mode=0o700)
                # The directory itself is one of them.
                for index in range(spare - 1):
                    os.close(os.open(reserved / str(index), os.O_CREAT | os.O_WRONLY, 0o600))
            finally:
                umount(Path(point))

    def _mount(self, image: Path, target: Path) -> None:
        device, fd = attach_loop(image)
        try:
            mount(device, target, "ext4", _MOUNT_OPTIONS)
        finally:
            os.close(fd)  # mounted: the mount holds the device; not mounted: it detaches


def _mounted(layer: Path) -> bool:
    """Whether an image is mounted on the layer: another device than its parent directory's
    (two stats, where reading the mount table would cost a line per container)."""
    try:
        return os.stat(layer).st_dev != os.stat(layer.parent).st_dev
    except FileNotFoundError:
        return False


def _superblock_inodes(image: Path) -> tuple[int, int]:
    """s_inodes_count and s_free_inodes_count from the superblock at byte 1024."""
    with image.open("rb") as fh:
        fh.seek(1024)
        head = fh.read(20)
    total, _, _, _, free = struct.unpack("<5I", head)
    return total, free

"""Disk quotas as project quotas: for a data directory on XFS or ext4 mounted with prjquota.

Each container's writable layer (`<container>/overlay`) gets a project id of its own,
inherited by everything created below it (FS_XFLAG_PROJINHERIT), and a hard limit on that
project's blocks and inodes (quotactl_fd(2), Q_SETQUOTA on PRJQUOTA). Creation costs two
system calls and no image. What LXD's `dir` backend and Docker's overlay2 `size=` do.

Needs a kernel with CONFIG_QUOTA and CONFIG_QFMT_V2 (ext4) or CONFIG_XFS_QUOTA (XFS), and the
data directory's filesystem mounted with project quotas on (`prjquota`; ext4 formatted with
`-O quota,project`). On ext4, mind that the kernel lets a writer holding CAP_SYS_RESOURCE
exceed a hard limit; overlayfs writes the upper layer with the mounter's credentials, which
for an unprivileged container are its own user namespace's root (without that capability on
the host), so the limit holds for the containers the agent makes.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct
import zlib
from pathlib import Path

from ..errors import DiskSetupFailed, HostPrerequisiteMissing
from .base import WRITABLE_LAYER, DiskQuota, DiskUsage
from .none import plain_layer

__all__ = ["ProjectQuotaBackend", "project_id_for", "quota_command"]

_SYS_QUOTACTL_FD = 443  # the same number on every architecture (added after the unified table)
_Q_GETQUOTA = 0x800007
_Q_SETQUOTA = 0x800008
_PRJQUOTA = 2
_SUBCMDSHIFT = 8
_QIF_BLIMITS = 1
_QIF_ILIMITS = 4
_QIF_LIMITS = _QIF_BLIMITS | _QIF_ILIMITS
_QUOTA_BLOCK = 1024  # dqb_bhardlimit counts 1 KiB blocks
_FS_IOC_FSGETXATTR = 0x801C581F
_FS_IOC_FSSETXATTR = 0x401C5820
_FS_XFLAG_PROJINHERIT = 0x00000200
# struct fsxattr: xflags, extsize, nextents, projid, cowextsize, 8 bytes of padding.
_FSXATTR = struct.Struct("<IIIII8x")
# Project ids of containers: above the ones people hand out by hand (/etc/projid).
_FIRST_ID = 1 << 20
_ID_SPACE = (1 << 31) - _FIRST_ID

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _DqBlk(ctypes.Structure):
    """struct if_dqblk of <linux/quota.h>."""

    _fields_ = [
        ("dqb_bhardlimit", ctypes.c_uint64),
        ("dqb_bsoftlimit", ctypes.c_uint64),
        ("dqb_curspace", ctypes.c_uint64),
        ("dqb_ihardlimit", ctypes.c_uint64),
        ("dqb_isoftlimit", ctypes.c_uint64),
        ("dqb_curinodes", ctypes.c_uint64),
        ("dqb_btime", ctypes.c_uint64),
        ("dqb_itime", ctypes.c_uint64),
        ("dqb_valid", ctypes.c_uint32),
    ]


def quota_command(command: int, kind: int = _PRJQUOTA) -> int:
    """QCMD(cmd, type) of <sys/quota.h>."""
    return (command << _SUBCMDSHIFT) | (kind & 0x00FF)


def project_id_for(name: str, attempt: int = 0) -> int:
    """A container's project id: from its name, moved on by `attempt` after a collision."""
    return _FIRST_ID + (zlib.crc32(name.encode()) + attempt) % _ID_SPACE


class ProjectQuotaBackend:
    """Project quotas on the filesystem of the LXC path."""

    name = "project-quota"

    def __init__(self, lxcpath: Path) -> None:
        self.lxcpath = lxcpath

    def check_host(self) -> None:
        self.lxcpath.mkdir(parents=True, exist_ok=True)
        try:
            self._get(self.lxcpath, _FIRST_ID)
        except OSError as exc:
            raise HostPrerequisiteMissing(
                f"project quotas do not work on {self.lxcpath} ({exc.strerror}): the kernel "
                "needs CONFIG_QUOTA with CONFIG_QFMT_V2 (ext4) or CONFIG_XFS_QUOTA, and the "
                "filesystem must be mounted with prjquota; or use disk_backend ext4-image"
            ) from exc

    def prepare(self, container_dir: Path, quota: DiskQuota, owner: int) -> None:
        plain_layer(container_dir, owner)
        layer = container_dir / WRITABLE_LAYER
        try:
            project = self._free_id(container_dir.name)
            for path in (layer, layer / "delta"):
                _set_project(path, project)
            self._set(layer, project, quota)
        except OSError as exc:
            raise DiskSetupFailed(
                f"cannot set the project quota of {container_dir.name}: {exc}"
            ) from exc

    def restore(self, container_dir: Path, quota: DiskQuota) -> None:
        # Quota limits live in the filesystem's quota files: they survive a reboot.
        return None

    def usage(self, container_dir: Path, quota: DiskQuota) -> DiskUsage | None:
        layer = container_dir / WRITABLE_LAYER
        try:
            found = self._get(layer, _project_of(layer))
        except OSError:
            return None
        return DiskUsage(
            used_bytes=found.dqb_curspace,
            limit_bytes=found.dqb_bhardlimit * _QUOTA_BLOCK or None,
            used_inodes=found.dqb_curinodes,
            limit_inodes=found.dqb_ihardlimit or None,
        )

    def release(self, container_dir: Path) -> None:
        # The limits are lifted once the files are gone (lxc-destroy removes them next);
        # lifted now, so that a project id left by a crash is not mistaken for one in use.
        layer = container_dir / WRITABLE_LAYER
        try:
            project = _project_of(layer)
        except OSError:  # no layer, or a filesystem without project ids: nothing to lift
            return
        if project:
            self._set(layer, project, DiskQuota(0, 0))

    # ----- quotactl ----------------------------------------------------------------------

    def _free_id(self, name: str) -> int:
        for attempt in range(64):
            project = project_id_for(name, attempt)
            found = self._get(self.lxcpath, project)
            if not (found.dqb_curinodes or found.dqb_bhardlimit or found.dqb_ihardlimit):
                return project
        raise OSError(errno.EEXIST, f"no free project id for {name} after 64 attempts")

    def _get(self, path: Path, project: int) -> _DqBlk:
        found = _DqBlk()
        _quotactl(path, quota_command(_Q_GETQUOTA), project, found)
        return found

    def _set(self, path: Path, project: int, quota: DiskQuota) -> None:
        wanted = _DqBlk(
            dqb_bhardlimit=-(-quota.bytes // _QUOTA_BLOCK),
            dqb_bsoftlimit=0,
            dqb_ihardlimit=quota.inodes,
            dqb_isoftlimit=0,
            dqb_valid=_QIF_LIMITS,
        )
        _quotactl(path, quota_command(_Q_SETQUOTA), project, wanted)


def _quotactl(path: Path, command: int, project: int, block: _DqBlk) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        done = _libc.syscall(
            _SYS_QUOTACTL_FD,
            ctypes.c_int(fd),
            ctypes.c_uint(command),
            ctypes.c_int(project),
            ctypes.byref(block),
        )
    finally:
        os.close(fd)
    if done != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"quotactl_fd {path}: {os.strerror(code)}")


def _project_of(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        raw = fcntl.ioctl(fd, _FS_IOC_FSGETXATTR, bytes(_FSXATTR.size))
    finally:
        os.close(fd)
    return int(_FSXATTR.unpack(raw)[3])


def _set_project(path: Path, project: int) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        raw = fcntl.ioctl(fd, _FS_IOC_FSGETXATTR, bytes(_FSXATTR.size))
        xflags, extsize, nextents, _, cowextsize = _FSXATTR.unpack(raw)
        changed = _FSXATTR.pack(
            xflags | _FS_XFLAG_PROJINHERIT, extsize, nextents, project, cowextsize
        )
        fcntl.ioctl(fd, _FS_IOC_FSSETXATTR, changed)
    finally:
        os.close(fd)

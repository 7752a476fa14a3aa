"""Loop devices and mounts through their system calls, without spawning losetup or mount.

A process spawn costs more than the kernel work of attaching and mounting a small image, and a
cold create pays for every one of them: LOOP_CTL_GET_FREE and LOOP_CONFIGURE on the
loop-control and loop devices, then mount(2). Loop devices are attached with autoclear, so
the last unmount (the host's and every container mount namespace's copy) detaches them and
nothing is left to free by hand.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
from pathlib import Path

__all__ = [
    "MNT_DETACH",
    "attach_loop",
    "mount",
    "sparse_copy",
    "umount",
]

_LOOP_CTL_GET_FREE = 0x4C82
_LOOP_CONFIGURE = 0x4C0A
_LO_FLAGS_AUTOCLEAR = 4
_LOOP_MAJOR = 7
_MS_NOSUID = 2
_MS_NODEV = 4
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]


class _LoopInfo64(ctypes.Structure):
    _fields_ = [
        ("lo_device", ctypes.c_uint64),
        ("lo_inode", ctypes.c_uint64),
        ("lo_rdevice", ctypes.c_uint64),
        ("lo_offset", ctypes.c_uint64),
        ("lo_sizelimit", ctypes.c_uint64),
        ("lo_number", ctypes.c_uint32),
        ("lo_encrypt_type", ctypes.c_uint32),
        ("lo_encrypt_key_size", ctypes.c_uint32),
        ("lo_flags", ctypes.c_uint32),
        ("lo_file_name", ctypes.c_uint8 * 64),
        ("lo_crypt_name", ctypes.c_uint8 * 64),
        ("lo_encrypt_key", ctypes.c_uint8 * 32),
        ("lo_init", ctypes.c_uint64 * 2),
    ]


class _LoopConfig(ctypes.Structure):
    _fields_ = [
        ("fd", ctypes.c_uint32),
        ("block_size", ctypes.c_uint32),
        ("info", _LoopInfo64),
        ("reserved", ctypes.c_uint64 * 8),
    ]


def _fail(what: str) -> OSError:
    code = ctypes.get_errno()
    return OSError(code, f"{what}: {os.strerror(code)}")


def _open_loop(number: int) -> tuple[str, int]:
    """Open /dev/loop<number>, making its device node first where /dev lacks it: a container's
    /dev is a copy of the devices that existed when it started (a privileged pod in a kind node,
    or on any containerd node), and LOOP_CTL_GET_FREE may hand out a loop device added since."""
    device = f"/dev/loop{number}"
    try:
        return device, os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        # The kernel's numbers for it (sysfs is the host's); loop's own without sysfs.
        try:
            major, minor = map(int, Path(f"/sys/block/loop{number}/dev").read_text().split(":"))
        except (OSError, ValueError):
            major, minor = _LOOP_MAJOR, number
        with contextlib.suppress(FileExistsError):  # made by a concurrent attach
            os.mknod(device, 0o660 | stat.S_IFBLK, os.makedev(major, minor))
        return device, os.open(device, os.O_RDWR | os.O_CLOEXEC)


def attach_loop(image: Path, attempts: int = 16) -> tuple[str, int]:
    """Attach `image` to a free loop device (autoclear); returns its path and an open
    descriptor of it, which the caller closes once the device is mounted (with autoclear,
    closing it unmounted detaches the device)."""
    control = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
    backing = os.open(image, os.O_RDWR | os.O_CLOEXEC)
    try:
        for _ in range(attempts):
            number = _libc.ioctl(control, _LOOP_CTL_GET_FREE, None)
            if number < 0:
                raise _fail("LOOP_CTL_GET_FREE")
            device, fd = _open_loop(number)
            config = _LoopConfig(fd=backing, block_size=0)
            config.info.lo_flags = _LO_FLAGS_AUTOCLEAR
            name = str(image).encode()[:63]
            ctypes.memmove(config.info.lo_file_name, name, len(name))
            if _libc.ioctl(fd, _LOOP_CONFIGURE, ctypes.byref(config)) == 0:
                return device, fd
            code = ctypes.get_errno()
            os.close(fd)
            if code != errno.EBUSY:  # EBUSY: another process took that device first
                raise OSError(code, f"LOOP_CONFIGURE {device}: {os.strerror(code)}")
        raise OSError(errno.EBUSY, f"no free loop device after {attempts} attempts")
    finally:
        os.close(backing)
        os.close(control)


def mount(source: str, target: Path, fstype: str, options: str) -> None:
    """mount(2) without setuid programs or device nodes on it."""
    if (
        _libc.mount(
            source.encode(),
            str(target).encode(),
            fstype.encode(),
            _MS_NOSUID | _MS_NODEV,
            options.encode(),
        )
        != 0
    ):
        raise _fail(f"mount {source} on {target}")


def umount(target: Path, flags: int = 0) -> bool:
    """umount2(2); False when nothing is mounted there."""
    if _libc.umount2(str(target).encode(), flags) == 0:
        return True
    if ctypes.get_errno() == errno.EINVAL:
        return False
    raise _fail(f"umount {target}")


def sparse_copy(source: Path, target: Path) -> None:
    """Copy a sparse file keeping its holes: only the data extents are copied (SEEK_DATA /
    SEEK_HOLE and copy_file_range), so a pristine 1 GiB image with a megabyte of metadata
    costs a megabyte to copy, not a gigabyte."""
    src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(src).st_size
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(dst, size)
            offset = 0
            while offset < size:
                try:
                    start = os.lseek(src, offset, os.SEEK_DATA)
                except OSError as exc:
                    if exc.errno == errno.ENXIO:  # only a hole is left
                        break
                    raise
                end = os.lseek(src, start, os.SEEK_HOLE)
                position = start
                while position < end:
                    copied = os.copy_file_range(src, dst, end - position, position, position)
                    if copied == 0:
                        break
                    position += copied
                offset = end
        finally:
            os.close(dst)
    finally:
        os.close(src)

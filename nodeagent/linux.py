"""Linux calls Python's os module lacks, through ctypes: openat2(2) resolving inside a root,
fstatfs(2)'s filesystem type, and creating files under another filesystem identity
(setfsuid(2), setfsgid(2), capset(2))."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import struct
from collections.abc import Iterator

__all__ = ["creating_as", "filesystem_type", "openat2_in_root"]

_SYS_OPENAT2 = 437  # the same number on every architecture (added after the unified table)
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_IN_ROOT = 0x10


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.fstatfs.argtypes = [ctypes.c_int, ctypes.c_void_p]
_libc.setfsuid.argtypes = [ctypes.c_uint]
_libc.setfsgid.argtypes = [ctypes.c_uint]

_CAPABILITY_V3 = 0x20080522
_CAP_DAC_OVERRIDE, _CAP_FOWNER = 1, 3


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


@contextlib.contextmanager
def creating_as(owner: int) -> Iterator[None]:
    """Create files and names as `owner` (a container's root): a filesystem mounted in the
    container's user namespace (its overlay root, its tmpfs) takes new files and new names
    only from an id mapped in it (EOVERFLOW otherwise). The filesystem ids of this thread
    become `owner`, which drops the file capabilities; DAC_OVERRIDE and FOWNER are raised
    again, as container root has them. Per thread: nothing else of the agent sees it, and it
    is undone on leaving."""
    _libc.setfsgid(owner)
    _libc.setfsuid(owner)
    try:
        header = _CapHeader(_CAPABILITY_V3, 0)
        data = (_CapData * 2)()
        if _libc.capget(ctypes.byref(header), data) == 0:
            data[0].effective |= data[0].permitted & ((1 << _CAP_DAC_OVERRIDE) | (1 << _CAP_FOWNER))
            _libc.capset(ctypes.byref(header), data)
        yield
    finally:
        _libc.setfsuid(0)  # back to 0: the file capabilities return (capabilities(7))
        _libc.setfsgid(0)


def openat2_in_root(dirfd: int, path: str, flags: int) -> int:
    """openat(2)'s descriptor for `path` resolved with `dirfd` as the root: `..` stops there,
    absolute symbolic links start there, magic links are refused (ELOOP)."""
    how = _OpenHow(flags | os.O_CLOEXEC, 0, _RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS)
    for _ in range(16):
        fd = _libc.syscall(
            ctypes.c_long(_SYS_OPENAT2),
            ctypes.c_int(dirfd),
            ctypes.c_char_p(path.encode()),
            ctypes.byref(how),
            ctypes.c_size_t(ctypes.sizeof(how)),
        )
        if fd >= 0:
            return int(fd)
        code = ctypes.get_errno()
        if code not in (errno.EAGAIN, errno.EINTR):  # EAGAIN: a rename raced the lookup
            raise OSError(code, os.strerror(code), path)
    raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN), path)


def filesystem_type(fd: int) -> int:
    """The magic number of the filesystem `fd` is on (fstatfs(2)'s f_type)."""
    buffer = ctypes.create_string_buffer(256)  # struct statfs; f_type is its first field
    if _libc.fstatfs(fd, buffer) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return int(struct.unpack_from("l", buffer.raw)[0]) & 0xFFFFFFFF

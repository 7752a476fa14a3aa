"""Files inside a running container, resolved in its root as its init sees it, never outside.

The root is /proc/<init>/root, opened as an O_PATH descriptor through the init's /proc
directory (checked to be the very process the service knows, so a recycled PID cannot point
the agent at another root). Every path is resolved from it with openat2(2) and
RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS: `..` stops at the container's root, absolute symbolic
links are resolved inside it, and magic links (/proc/self/root, /proc/<pid>/fd/...) are
refused. Paths must be absolute and normalised before that. What a path resolves to is checked
with fstat on the O_PATH descriptor before anything is opened for I/O (a FIFO never blocks
the agent): only regular files and directories, only on disk or memory filesystems (the agent
is host root: a container's /proc, /sys or cgroup files are not served). Writes go to a new
file in the same directory, owned by the container's root, then renamed over the target.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import secrets
import stat
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from .errors import (
    AgentError,
    ContainerNotRunning,
    FileNotFound,
    FileTooLarge,
    InsufficientStorage,
    InvalidPath,
    IsADirectory,
    PermissionDenied,
    ReadOnlyFilesystem,
    UnsupportedFileType,
)
from .linux import creating_as, filesystem_type, openat2_in_root
from .models import DirectoryListing, FileDeleted, FileEntry, FileType, FileWritten
from .processes import InitProcess

__all__ = ["ContainerFiles", "RegularFile", "check_path", "parse_mode"]

_MAX_PATH = 4096
_MAX_NAME = 255
_CHUNK = 256 * 1024
_MODE = re.compile(r"^0?[0-7]{3,4}$")

# Filesystems whose files are plain data: a container's root (overlay), its tmpfs mounts and
# disks bound in. Everything else (proc, sysfs, cgroup, devpts, debugfs, ...) is refused.
_DATA_FILESYSTEMS = {
    0x794C7630,  # overlayfs
    0x01021994,  # tmpfs
    0x858458F6,  # ramfs
    0xEF53,  # ext2, ext3, ext4
    0x58465342,  # xfs
    0x9123683E,  # btrfs
    0xF2F52010,  # f2fs
    0x2FC12FC1,  # zfs
    0x73717368,  # squashfs
}


def check_path(path: str) -> list[str]:
    """The components of an absolute, normalised path; InvalidPath otherwise."""
    if not path.startswith("/"):
        raise InvalidPath(f"{path[:80]!r} is not an absolute path")
    if "\x00" in path or len(path.encode()) > _MAX_PATH:
        raise InvalidPath("a path has no NUL bytes and at most 4096 bytes")
    if path == "/":
        return []
    parts = path[1:].split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise InvalidPath(
                f"{path[:80]!r} is not normalised: no empty, '.' or '..' segments, no trailing /"
            )
        if len(part.encode()) > _MAX_NAME:
            raise InvalidPath(f"a name in a path has at most {_MAX_NAME} bytes")
    return parts


def parse_mode(text: str) -> int:
    """Permission bits from octal text ('0644', '755', '4755')."""
    if _MODE.match(text) is None:
        raise InvalidPath(f"mode {text[:20]!r} is not octal permission bits like 0644")
    return int(text, 8)


def _octal(mode: int) -> str:
    return f"{stat.S_IMODE(mode):04o}"


@dataclass(frozen=True)
class RegularFile:
    """A regular file opened for reading; the caller closes `fd` (read_chunks does)."""

    fd: int
    size: int
    mode: str


def _errors(path: str, error: OSError) -> AgentError:
    code = error.errno
    if code in (errno.ENOENT, errno.ENOTDIR):
        return FileNotFound(f"{path}: no such file or directory in the container")
    if code == errno.ELOOP:
        return InvalidPath(f"{path}: too many symbolic links, or a magic link")
    if code == errno.EISDIR:
        return IsADirectory(f"{path} is a directory")
    if code == errno.EROFS:
        return ReadOnlyFilesystem(f"{path} is on a read-only filesystem")
    if code in (errno.EACCES, errno.EPERM):
        return PermissionDenied(f"{path}: {error.strerror}")
    if code in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientStorage(f"{path}: {error.strerror}")
    if code == errno.ENAMETOOLONG:
        return InvalidPath(f"{path}: name too long")
    return PermissionDenied(f"{path}: {error.strerror}")


@contextlib.contextmanager
def _root(init: InitProcess) -> Iterator[int]:
    """An O_PATH descriptor of the container's root, as its init sees it."""
    try:
        proc = os.open(f"/proc/{init.pid}", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        raise ContainerNotRunning("the container's init is gone") from None
    try:
        # The descriptor holds on to that very process: if it is not the init the service
        # knows (the PID was recycled), reading its stat says so, or fails.
        stat_fd = os.open("stat", os.O_RDONLY | os.O_CLOEXEC, dir_fd=proc)
        try:
            text = os.read(stat_fd, 4096).decode()
        finally:
            os.close(stat_fd)
        if int(text.rsplit(")", 1)[1].split()[19]) != init.start_ticks:
            raise ContainerNotRunning("the container's init is gone")
        root = os.open("root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=proc)
    except OSError:
        raise ContainerNotRunning("the container's init is gone") from None
    finally:
        os.close(proc)
    try:
        yield root
    finally:
        os.close(root)


def _kind(mode: int) -> FileType:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


def _check_served(fd: int, path: str, mode: int) -> None:
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise UnsupportedFileType(
            f"{path} is a {_describe(mode)}: only regular files and directories are served"
        )
    if filesystem_type(fd) not in _DATA_FILESYSTEMS:
        raise UnsupportedFileType(f"{path} is on a pseudo filesystem (proc, sysfs, ...)")


def _describe(mode: int) -> str:
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "special file"


def _reopen(fd: int, flags: int) -> int:
    """Open for I/O what an O_PATH descriptor refers to, without resolving a path again."""
    return os.open(f"/proc/self/fd/{fd}", flags | os.O_CLOEXEC)


class ContainerFiles:
    """Reads and writes files inside containers."""

    def __init__(self, owner: int, max_bytes: int, max_entries: int = 10000) -> None:
        # The container's root: host uid and gid idmap_base.
        self.owner = owner
        self.max_bytes = max_bytes
        self.max_entries = max_entries

    # ----- reading ------------------------------------------------------------------------

    def read(self, init: InitProcess, path: str) -> RegularFile | DirectoryListing:
        """A regular file opened for reading, or a directory's listing."""
        check_path(path)
        with _root(init) as root:
            try:
                found = openat2_in_root(root, path, os.O_PATH)
            except OSError as exc:
                raise _errors(path, exc) from None
        try:
            info = os.fstat(found)
            _check_served(found, path, info.st_mode)
            if stat.S_ISDIR(info.st_mode):
                return self._listing(found, path)
            if info.st_size > self.max_bytes:
                raise FileTooLarge(
                    f"{path} has {info.st_size} bytes, above the cap of {self.max_bytes}"
                )
            fd = _reopen(found, os.O_RDONLY)
        except OSError as exc:
            raise _errors(path, exc) from None
        finally:
            os.close(found)
        return RegularFile(fd, info.st_size, _octal(info.st_mode))

    async def read_chunks(self, file: RegularFile) -> AsyncIterator[bytes]:
        """The file's bytes, at most the size it had when opened; closes it at the end."""
        try:
            left = file.size
            while left > 0:
                chunk = await asyncio.to_thread(os.read, file.fd, min(_CHUNK, left))
                if not chunk:
                    break
                left -= len(chunk)
                yield chunk
        finally:
            os.close(file.fd)

    def _listing(self, found: int, path: str) -> DirectoryListing:
        fd = _reopen(found, os.O_RDONLY | os.O_DIRECTORY)
        items: list[FileEntry] = []
        truncated = False
        try:
            with os.scandir(fd) as entries:
                for entry in entries:
                    if len(items) >= self.max_entries:
                        truncated = True
                        break
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue  # removed meanwhile
                    items.append(
                        FileEntry(
                            name=entry.name,
                            type=_kind(info.st_mode),
                            size=info.st_size,
                            mode=_octal(info.st_mode),
                            modified_at=datetime.fromtimestamp(info.st_mtime, UTC),
                        )
                    )
        finally:
            os.close(fd)
        items.sort(key=lambda item: item.name)
        return DirectoryListing(path=path, items=items, truncated=truncated)

    def is_executable(self, init: InitProcess, path: str) -> bool:
        """Whether `path` inside the container is an executable regular file."""
        with _root(init) as root:
            try:
                found = openat2_in_root(root, path, os.O_PATH)
            except OSError:
                return False
        try:
            mode = os.fstat(found).st_mode
        finally:
            os.close(found)
        return stat.S_ISREG(mode) and bool(mode & 0o111)

    def login_shell(self, init: InitProcess) -> tuple[str, ...]:
        """The container's login shell: bash if the root filesystem has it, else sh."""
        if self.is_executable(init, "/bin/bash"):
            return ("/bin/bash", "-l")
        return ("/bin/sh", "-l")

    # ----- writing ------------------------------------------------------------------------

    async def write(
        self,
        init: InitProcess,
        path: str,
        mode: int,
        body: AsyncIterator[bytes],
        length: int | None,
    ) -> FileWritten:
        """Write `body` to `path` atomically: a new file in the same directory, owned by the
        container's root, renamed over the target (a symbolic link there is replaced, not
        followed). The directory must exist."""
        parts = check_path(path)
        if not parts:
            raise IsADirectory("/ is a directory")
        if length is not None and length > self.max_bytes:
            raise FileTooLarge(f"{length} bytes is above the cap of {self.max_bytes}")
        name = parts[-1]
        parent = self._parent(init, path)
        try:
            self._check_target(parent, name, path)
            temporary = f".tuxio-{secrets.token_hex(8)}"
            with creating_as(self.owner):
                fd = os.open(
                    temporary,
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o600,
                    dir_fd=parent,
                )
            try:
                size = await self._fill(fd, body)
                os.fchown(fd, self.owner, self.owner)  # the group too, whatever the directory's
                os.fchmod(fd, mode)  # after fchown, which clears set-id bits
                await asyncio.to_thread(os.fsync, fd)
                os.close(fd)
                fd = -1
                with creating_as(self.owner):  # a new name is a creation too
                    os.rename(temporary, name, src_dir_fd=parent, dst_dir_fd=parent)
            except BaseException:
                if fd >= 0:
                    os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(temporary, dir_fd=parent)
                raise
        except OSError as exc:
            raise _errors(path, exc) from None
        finally:
            os.close(parent)
        return FileWritten(path=path, size=size, mode=f"{mode:04o}")

    async def _fill(self, fd: int, body: AsyncIterator[bytes]) -> int:
        size = 0
        async for chunk in body:
            size += len(chunk)
            if size > self.max_bytes:
                raise FileTooLarge(f"the body is above the cap of {self.max_bytes} bytes")
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
        return size

    def delete(self, init: InitProcess, path: str) -> FileDeleted:
        """Remove a file (a symbolic link itself, not its target); never a directory."""
        parts = check_path(path)
        if not parts:
            raise IsADirectory("/ is a directory")
        parent = self._parent(init, path)
        try:
            self._check_target(parent, parts[-1], path, must_exist=True)
            os.unlink(parts[-1], dir_fd=parent)
        except OSError as exc:
            raise _errors(path, exc) from None
        finally:
            os.close(parent)
        return FileDeleted(path=path, deleted=True)

    def _parent(self, init: InitProcess, path: str) -> int:
        """An O_PATH descriptor of the directory holding `path`, on a data filesystem."""
        directory = path.rsplit("/", 1)[0] or "/"
        with _root(init) as root:
            try:
                parent = openat2_in_root(root, directory, os.O_PATH | os.O_DIRECTORY)
            except OSError as exc:
                raise _errors(directory, exc) from None
        try:
            _check_served(parent, directory, os.fstat(parent).st_mode)
        except BaseException:
            os.close(parent)
            raise
        return parent

    def _check_target(self, parent: int, name: str, path: str, must_exist: bool = False) -> None:
        try:
            info = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            if must_exist:
                raise
            return
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectory(f"{path} is a directory")
        if not (stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode)):
            raise UnsupportedFileType(
                f"{path} is a {_describe(info.st_mode)}: only regular files are written"
            )

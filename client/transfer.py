"""`kubectl tuxio cp`: copies between this machine and a sandbox, both ways, through the
files subresource. A sandbox side is `[NAMESPACE/]SANDBOX:/absolute/path`, anything else a
local path (`-` is stdin or stdout). Directories are copied with what is in them: files and
subdirectories (made with `mkdir -p` through exec), symbolic links skipped."""

from __future__ import annotations

import asyncio
import os
import posixpath
import re
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import SandboxError, SandboxInvalid, SandboxNotFound
from .sandbox import AsyncSandbox

__all__ = ["RemotePath", "copy_from", "copy_to", "parse_location"]

_REMOTE = re.compile(
    r"^(?:(?P<ns>[a-z0-9]([-a-z0-9]*[a-z0-9])?)/)?(?P<name>[a-z0-9]([-a-z0-9]*[a-z0-9])?):(?P<path>.*)$"
)


@dataclass(frozen=True, slots=True)
class RemotePath:
    """A path inside a sandbox."""

    namespace: str | None
    name: str
    path: str


def parse_location(text: str) -> RemotePath | str:
    """A sandbox path (`[ns/]name:/path`), or the local path `text` as it is. A local path with
    a colon in it can be written `./a:b`."""
    if text.startswith(("/", "./", "../")) or text == "-":
        return text
    found = _REMOTE.match(text)
    if found is None:
        return text
    path = found["path"]
    if not path.startswith("/"):
        raise SandboxInvalid(f"{text}: the path inside the sandbox must be absolute")
    normal = posixpath.normpath(path)
    return RemotePath(found["ns"], found["name"], normal)


async def _is_directory(sandbox: AsyncSandbox, path: str) -> bool:
    try:
        await sandbox.files.list(path)
    except (SandboxNotFound, SandboxInvalid):
        return False
    return True


async def _mkdir(sandbox: AsyncSandbox, path: str) -> None:
    result = await sandbox.exec(["mkdir", "-p", "--", path])
    if result.exit_code != 0:
        raise SandboxError(f"mkdir {path} in the sandbox: {result.stderr.decode().strip()}")


async def copy_to(sandbox: AsyncSandbox, local: str, remote: str) -> int:
    """Copy the local file or directory `local` (`-`: stdin) to `remote` in the sandbox (into
    it, if it is a directory); the number of files written."""
    if local == "-":
        data = await asyncio.to_thread(sys.stdin.buffer.read)
        await sandbox.files.write(remote, data)
        return 1
    source = Path(local)
    target = remote
    if await _is_directory(sandbox, remote):
        target = posixpath.join(remote, source.name)
    directories, files = await asyncio.to_thread(_local_tree, source)
    for directory in directories:
        await _mkdir(sandbox, posixpath.normpath(posixpath.join(target, directory)))
    for relative, mode in files:
        data = await asyncio.to_thread(
            (source / relative).read_bytes if relative else source.read_bytes
        )
        await sandbox.files.write(posixpath.normpath(posixpath.join(target, relative)), data, mode)
    return len(files)


def _local_tree(source: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """The directories (made first, parents before children) and the regular files, with
    their permission bits, of `source`, as paths relative to it ("" for `source` itself)."""
    info = source.stat()
    if not stat.S_ISDIR(info.st_mode):
        return [], [("", stat.S_IMODE(info.st_mode))]
    directories, files = ["."], []
    for directory, subdirs, names in os.walk(source):
        here = Path(directory)
        for sub in sorted(subdirs):
            if not (here / sub).is_symlink():
                directories.append((here / sub).relative_to(source).as_posix())
        for name in sorted(names):
            path = here / name
            if not path.is_symlink() and path.is_file():
                files.append(
                    (path.relative_to(source).as_posix(), stat.S_IMODE(path.stat().st_mode))
                )
    return directories, files


async def copy_from(sandbox: AsyncSandbox, remote: str, local: str) -> int:
    """Copy the file or directory `remote` in the sandbox to `local` (`-`: stdout; into it if
    it is a directory); the number of files written."""
    if not await _is_directory(sandbox, remote):
        data = await sandbox.files.read(remote)
        if local == "-":
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
            return 1
        await asyncio.to_thread(_write_local, _into(Path(local), remote), data, None)
        return 1
    if local == "-":
        raise SandboxInvalid(f"{remote} is a directory: give a local directory to copy it to")
    return await _download_tree(sandbox, remote, _into(Path(local), remote))


def _into(local: Path, remote: str) -> Path:
    """`local`, or the remote's name inside it when it is a directory (as cp does)."""
    return local / posixpath.basename(remote) if local.is_dir() else local


def _write_local(path: Path, data: bytes, mode: str | None) -> None:
    path.write_bytes(data)
    if mode is not None and mode.isdigit():
        path.chmod(int(mode, 8) & 0o777)


async def _download_tree(sandbox: AsyncSandbox, remote: str, target: Path) -> int:
    await asyncio.to_thread(target.mkdir, parents=True, exist_ok=True)
    written = 0
    for entry in await sandbox.files.list(remote):
        path = posixpath.join(remote, entry["name"])
        if entry["type"] == "directory":
            written += await _download_tree(sandbox, path, target / entry["name"])
        elif entry["type"] == "file":
            data = await sandbox.files.read(path)
            await asyncio.to_thread(_write_local, target / entry["name"], data, entry.get("mode"))
            written += 1
    return written

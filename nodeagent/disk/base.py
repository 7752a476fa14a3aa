"""The one interface every disk backend implements, and what it reports.

A backend boxes in the writable layer of a container: the directory `<container>/overlay`,
whose `delta/` LXC uses as the overlay's upper directory (and `work/` beside it as the
overlay's work directory). It makes that place at clone time with a limit on bytes and on
inodes, restores it after a host reboot, tells what is used, and releases it before the
container is destroyed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

__all__ = ["WRITABLE_LAYER", "DiskBackend", "DiskQuota", "DiskUsage"]

# The container directory's child that holds the overlay's upper and work directories.
WRITABLE_LAYER = "overlay"


@dataclass(frozen=True)
class DiskQuota:
    """The limits of one container's writable layer."""

    bytes: int
    inodes: int


@dataclass(frozen=True)
class DiskUsage:
    """What a writable layer holds and may hold, as its filesystem (or quota) counts it."""

    used_bytes: int
    limit_bytes: int | None
    used_inodes: int
    limit_inodes: int | None


class DiskBackend(Protocol):
    """A mechanism that limits a container's writable layer."""

    name: str

    def check_host(self) -> None:
        """HostPrerequisiteMissing unless this host can run the backend."""
        ...

    def prepare(self, container_dir: Path, quota: DiskQuota, owner: int) -> None:
        """Make `<container_dir>/overlay/delta` (owned by `owner`, container root) inside a
        place limited to `quota`. Undoes what it did when it fails."""
        ...

    def restore(self, container_dir: Path, quota: DiskQuota) -> None:
        """After an agent restart or a host reboot: make the limited place present again
        (a no-op when it still is)."""
        ...

    def usage(self, container_dir: Path, quota: DiskQuota) -> DiskUsage | None:
        """What the writable layer uses; None when the backend cannot tell."""
        ...

    def release(self, container_dir: Path) -> None:
        """Before the container's directory is removed: detach what prepare attached, so
        that removing the directory removes everything (idempotent)."""
        ...

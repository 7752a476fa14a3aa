"""No disk limit: the writable layer is a plain directory on the data directory's filesystem.

For hosts whose operators box disk in some other way (a filesystem per host, say), and for
containers made before the agent limited disks. Usage is not reported: counting it would
mean walking the layer.
"""

from __future__ import annotations

import os
from pathlib import Path

from .base import WRITABLE_LAYER, DiskQuota, DiskUsage

__all__ = ["NoDiskLimit", "plain_layer"]


def plain_layer(container_dir: Path, owner: int) -> None:
    """overlay/ and overlay/delta/, owned by container root, as `lxc-copy -B overlay` makes."""
    layer = container_dir / WRITABLE_LAYER
    for path in (layer, layer / "delta"):
        path.mkdir(mode=0o755, exist_ok=True)
        os.chown(path, owner, owner)


class NoDiskLimit:
    name = "none"

    def check_host(self) -> None:
        return None

    def prepare(self, container_dir: Path, quota: DiskQuota, owner: int) -> None:
        plain_layer(container_dir, owner)

    def restore(self, container_dir: Path, quota: DiskQuota) -> None:
        return None

    def usage(self, container_dir: Path, quota: DiskQuota) -> DiskUsage | None:
        return None

    def release(self, container_dir: Path) -> None:
        return None

"""Disk and inode quotas on each container's writable layer, one backend per mechanism.

- ext4-image: a sparse ext4 image per container, loop-mounted as its writable layer. Works on
  any kernel with loop devices and ext4, quota support or not.
- project-quota: a project quota per container on an XFS or ext4 data directory mounted with
  prjquota; needs the kernel's quota support.
- none: no limit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from .base import WRITABLE_LAYER, DiskBackend, DiskQuota, DiskUsage
from .ext4_image import IMAGE_FILE, Ext4ImageBackend
from .none import NoDiskLimit
from .project_quota import ProjectQuotaBackend

__all__ = [
    "BACKENDS",
    "IMAGE_FILE",
    "WRITABLE_LAYER",
    "BackendName",
    "DiskBackend",
    "DiskQuota",
    "DiskUsage",
    "Ext4ImageBackend",
    "NoDiskLimit",
    "ProjectQuotaBackend",
    "backend_named",
]

BackendName = Literal["ext4-image", "project-quota", "none"]
BACKENDS: tuple[BackendName, ...] = ("ext4-image", "project-quota", "none")


def backend_named(name: BackendName, data_dir: Path, lxcpath: Path) -> DiskBackend:
    """The backend an agent setting names; its host check is the caller's to run."""
    if name == "ext4-image":
        return Ext4ImageBackend(data_dir / "disk")
    if name == "project-quota":
        return ProjectQuotaBackend(lxcpath)
    return NoDiskLimit()

"""The disk backends' pure parts: quotactl commands, project ids, the sparse copy."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tuxio.nodeagent.disk.blockdev import sparse_copy
from tuxio.nodeagent.disk.project_quota import project_id_for, quota_command


def test_quota_commands_are_those_of_sys_quota_h() -> None:
    # QCMD(Q_GETQUOTA, PRJQUOTA) and QCMD(Q_SETQUOTA, PRJQUOTA), as quota-tools computes them.
    assert quota_command(0x800007) == 0x80000702
    assert quota_command(0x800008) == 0x80000802


@pytest.mark.parametrize("name", ["sbx-1", "pool-abcd-1234", "a" * 63])
def test_project_ids_are_stable_and_move_on_after_a_collision(name: str) -> None:
    first = project_id_for(name)
    assert first == project_id_for(name)
    assert 1 << 20 <= first < 1 << 31
    assert project_id_for(name, 1) != first
    assert 1 << 20 <= project_id_for(name, 2**31) < 1 << 31


def test_sparse_copy_keeps_the_holes(tmp_path: Path) -> None:
    source, target = tmp_path / "pristine.img", tmp_path / "copy.img"
    size = 256 * 2**20
    with source.open("wb") as fh:
        fh.truncate(size)
        for offset in (0, 100 * 2**20, size - 4096):
            fh.seek(offset)
            fh.write(os.urandom(4096))
    sparse_copy(source, target)
    assert target.stat().st_size == size
    assert target.read_bytes() == source.read_bytes()
    # Only the written extents take blocks (a filesystem may round up to its own extents).
    assert target.stat().st_blocks * 512 <= 3 * 2**20


def test_sparse_copy_never_overwrites(tmp_path: Path) -> None:
    source, target = tmp_path / "a", tmp_path / "b"
    source.write_bytes(b"new")
    target.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        sparse_copy(source, target)
    assert target.read_bytes() == b"old"

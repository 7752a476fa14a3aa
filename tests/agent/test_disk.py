"""Disk and inode quotas are real: a container writing until ENOSPC or creating files until
its inodes run out takes at most its limits from the host, and its neighbour keeps writing.

The agent here runs the ext4-image backend, the one these hosts' kernels support (they lack
the quota formats project quotas need): each container's writable layer is a loop-mounted
sparse ext4 image in its directory.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.agent.conftest import agent_with
from tests.support import Agent, wait_until

DISK = 64 * 2**20
INODES = 2048


def put(http: httpx.Client, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    response = http.put(f"/v1/containers/{name}", json=spec)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def run(http: httpx.Client, name: str, script: str, timeout: float = 120) -> dict[str, Any]:
    response = http.post(
        f"/v1/containers/{name}/exec",
        json={"argv": ["sh", "-c", script], "timeoutSeconds": timeout},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def image_of(agent: Agent, name: str) -> Path:
    return agent.lxcpath / name / "disk.img"


def allocated(path: Path) -> int:
    """Bytes the host's filesystem gives a (sparse) file."""
    return os.stat(path).st_blocks * 512


def loops_backed_by(directory: Path) -> list[str]:
    found = []
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        try:
            target = backing.read_text().strip().removesuffix(" (deleted)")
        except OSError:
            continue
        if target.startswith(f"{directory}/"):
            found.append(target)
    return found


def mounts_under(directory: Path) -> list[str]:
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return [p for p in points if p == str(directory) or p.startswith(f"{directory}/")]


@pytest.fixture
def neighbour(http: httpx.Client, agent: Agent) -> Iterator[str]:
    """A second container with the host's default limits, deleted afterwards."""
    chosen = f"neighbour-{uuid.uuid4().hex[:6]}"
    put(http, chosen, {"template": "busybox"})
    yield chosen
    http.delete(f"/v1/containers/{chosen}")


def small(**limits: Any) -> dict[str, Any]:
    return {"template": "busybox", "limits": {"disk": DISK, "inodes": INODES, **limits}}


def test_writing_until_enospc_takes_at_most_the_quota(
    http: httpx.Client, agent: Agent, name: str, neighbour: str
) -> None:
    status = put(http, name, small())
    assert status["disk"]["backend"] == "ext4-image"
    assert 0 < status["disk"]["limitBytes"] <= DISK
    assert status["disk"]["limitInodes"] == INODES
    # Four times the quota asked for: dd stops at ENOSPC.
    result = run(http, name, f"dd if=/dev/zero of=/fill bs=1M count={4 * DISK // 2**20}")
    assert result["exitCode"] != 0
    assert "No space left on device" in result["stderr"]
    # What the host gave the container is its image's blocks: at most the quota.
    image = image_of(agent, name)
    assert allocated(image) <= DISK
    # The layer is full: its filesystem says so, and so does the agent.
    seen = http.get(f"/v1/containers/{name}").json()["disk"]
    assert seen["usedBytes"] >= 0.95 * seen["limitBytes"]
    written = int(run(http, name, "wc -c < /fill")["stdout"])
    assert written >= DISK // 2
    # A file written through the agent's files route meets the same limit, as a 507.
    refused = http.put(
        f"/v1/containers/{name}/files", params={"path": "/more"}, content=b"x" * 2**20
    )
    assert refused.status_code == 507, refused.text
    assert refused.json()["reason"] == "InsufficientStorage"
    # The neighbour keeps writing, and the full container can still free its space.
    assert run(http, neighbour, "echo written > /note && cat /note")["stdout"] == "written\n"
    assert run(http, name, "rm /fill && echo freed > /after && cat /after")["exitCode"] == 0
    # discard punches the freed blocks back out of the sparse image.
    wait_until(lambda: allocated(image) < DISK // 2, timeout=30)


def test_creating_files_stops_at_the_inode_limit(
    http: httpx.Client, agent: Agent, name: str, neighbour: str
) -> None:
    put(http, name, small())
    # A builtin redirection creates each file: no process per file.
    script = "mkdir /many && i=0; while true 2>/dev/null > /many/$i; do i=$((i+1)); done; echo $i"
    result = run(http, name, script, timeout=600)
    created = int(result["stdout"].split()[-1])
    # At most the limit, and not stopped by anything else: the layer's own dozen inodes aside.
    assert INODES - 32 <= created <= INODES
    seen = http.get(f"/v1/containers/{name}").json()["disk"]
    assert seen["usedInodes"] == seen["limitInodes"] == INODES
    assert allocated(image_of(agent, name)) <= DISK
    for index in range(3):
        note = run(http, neighbour, f"echo {index} > /note{index} && cat /note{index}")
        assert note["stdout"] == f"{index}\n"


def test_default_limits_come_from_the_host(http: httpx.Client, agent: Agent, name: str) -> None:
    status = put(http, name, {"template": "busybox"})
    host = http.get("/v1/host").json()["disk"]
    assert host["backend"] == "ext4-image"
    assert host["defaultBytes"] == 2**30 and host["defaultInodes"] == 65536
    assert status["disk"]["limitInodes"] == host["defaultInodes"]
    # The filesystem's own metadata (inode tables, bitmaps) comes out of the image.
    assert 0.95 * host["defaultBytes"] < status["disk"]["limitBytes"] <= host["defaultBytes"]
    assert host["allocatedBytes"] >= host["defaultBytes"]
    assert 0 < host["freeBytes"] <= host["totalBytes"]
    assert 0 < host["freeInodes"] <= host["totalInodes"]
    # Sparse: the host holds a few hundred KiB of metadata, not a gigabyte.
    assert allocated(image_of(agent, name)) < 8 * 2**20


def test_the_disk_cannot_change_in_place(http: httpx.Client, name: str) -> None:
    put(http, name, small())
    response = http.put(f"/v1/containers/{name}", json=small(disk=2 * DISK))
    assert response.status_code == 409, response.text
    assert response.json()["reason"] == "SpecConflict"
    # Other limits still change live, the disk left out keeps what it was made with.
    changed = put(http, name, {"template": "busybox", "limits": {"pids": 99}})
    assert changed["limits"]["pids"] == 99
    assert changed["disk"]["limitInodes"] == INODES


@pytest.mark.parametrize("limits", [{"disk": "16Mi"}, {"inodes": 10}, {"disk": "lots"}])
def test_bad_disk_limits_are_refused(http: httpx.Client, name: str, limits: dict[str, Any]) -> None:
    response = http.put(f"/v1/containers/{name}", json={"template": "busybox", "limits": limits})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["reason"] == "InvalidRequest"
    assert [detail["loc"][-1] for detail in body["details"]] == list(limits)


def test_delete_detaches_and_removes_everything(
    http: httpx.Client, agent: Agent, name: str
) -> None:
    put(http, name, small())
    directory = agent.lxcpath / name
    run(http, name, "dd if=/dev/zero of=/some bs=1M count=4")
    assert loops_backed_by(directory) and mounts_under(directory)
    assert http.delete(f"/v1/containers/{name}").status_code == 200
    assert not directory.exists()
    wait_until(lambda: not loops_backed_by(directory), timeout=30)
    assert mounts_under(directory) == []


def test_below_the_reserve_new_containers_are_refused() -> None:
    # A reserve larger than any disk: every create is refused, with the reason.
    with agent_with("reserve", disk_reserve_bytes=2**60) as agent, agent.client() as http:
        host = http.get("/v1/host").json()["disk"]
        assert host["belowReserve"] is True
        response = http.put("/v1/containers/refused", json={"template": "busybox"})
        assert response.status_code == 507, response.text
        body = response.json()
        assert body["reason"] == "DiskBelowReserve"
        assert re.search(r"below the reserve of \d+ bytes", body["message"])
        assert not (agent.lxcpath / "refused").exists()


def test_a_restarted_agent_mounts_the_images_again() -> None:
    with agent_with("remount") as agent:
        with agent.client() as http:
            put(http, "kept", {**small(), "state": "stopped"})
            layer = agent.lxcpath / "kept" / "overlay"
            assert mounts_under(layer)
        agent.stop()
        # As after a reboot: the mount is gone, the image stays.
        subprocess.run(["umount", str(layer)], check=True)
        assert not mounts_under(layer)
        agent.start()
        assert mounts_under(layer)
        with agent.client() as http:
            status = put(http, "kept", small())
            assert status["state"] == "running"
            assert run(http, "kept", "echo back > /x && cat /x")["stdout"] == "back\n"
            assert http.delete("/v1/containers/kept").status_code == 200
